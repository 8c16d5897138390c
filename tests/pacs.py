"""Test helper: a real PACS (Debian's Orthanc) on 127.0.0.1, with its own temporary configuration and storage,
started by a test and stopped after it; its REST API to store, look up and download instances.

The archive knows one modality, AE title PDAC, and checks both AE titles, so an unknown calling or called AE
title is refused as a hospital archive would. A Lua filter drops (while answering success, as Orthanc 1.10
does) every instance of patient DROPPED_PATIENT: what `pdac`'s arrival check must catch."""

from __future__ import annotations

import io
import json
import shutil
import socket
import subprocess
import time
import urllib.request
import zipfile
from pathlib import Path

AE_TITLE = "ORTHANC"
CALLING_AE = "PDAC"
DROPPED_PATIENT = "PDAC-DROPPED"
LUA_FILTER = f"""
function ReceivedInstanceFilter(dicom, origin, info)
  return dicom.PatientID ~= '{DROPPED_PATIENT}'
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Orthanc:
    def __init__(self, root: Path):
        self.root = root
        self.http_port, self.dicom_port = free_port(), free_port()
        self.process: subprocess.Popen | None = None

    @property
    def destination(self) -> str:
        return f"{AE_TITLE}@127.0.0.1:{self.dicom_port}"

    def start(self, timeout: float = 60) -> None:
        storage = self.root / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        (self.root / "filter.lua").write_text(LUA_FILTER)
        config = {
            "Name": "pdac-test-pacs", "StorageDirectory": str(storage), "IndexDirectory": str(storage),
            "HttpPort": self.http_port, "DicomPort": self.dicom_port, "DicomAet": AE_TITLE,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
            "DicomCheckCalledAet": True, "DicomAlwaysAllowStore": False, "DicomAlwaysAllowEcho": False,
            "DicomModalities": {"pdac": [CALLING_AE, "127.0.0.1", free_port()]}, "DicomCheckModalityHost": False,
            "LuaScripts": [str(self.root / "filter.lua")], "Plugins": [], "StableAge": 1,
        }
        (self.root / "orthanc.json").write_text(json.dumps(config, indent=1))
        log = (self.root / "orthanc.log").open("w")
        self.process = subprocess.Popen([shutil.which("Orthanc"), str(self.root / "orthanc.json")],
                                        stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited: {(self.root / 'orthanc.log').read_text()[-2000:]}")
            try:
                self.get("/system")
                return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError("Orthanc did not answer in time")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def _request(self, path: str, data: bytes | None = None) -> bytes:
        request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=data,
                                         method="POST" if data is not None else "GET")
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.read()

    def get(self, path: str):
        return json.loads(self._request(path))

    def post(self, path: str, data: bytes):
        return json.loads(self._request(path, data))

    def upload(self, files) -> None:
        """Store files through the REST API (not DICOM networking: independent of `pdac send`)."""
        for f in files:
            self.post("/instances", Path(f).read_bytes())

    def lookup(self, uid: str, kind: str) -> str | None:
        hits = [h for h in self.post("/tools/lookup", uid.encode()) if h["Type"] == kind]
        return hits[0]["ID"] if hits else None

    def study_series(self, study_uid: str) -> list[dict]:
        """The series of a study: MainDicomTags plus `Instances` (Orthanc ids)."""
        study = self.lookup(study_uid, "Study")
        return self.get(f"/studies/{study}/series") if study else []

    def instance_file(self, instance_id: str) -> bytes:
        return self._request(f"/instances/{instance_id}/file")

    def download_series(self, series_uid: str, folder: Path) -> None:
        """A series as the archive returns it (its ZIP archive), unpacked into `folder`."""
        data = self._request(f"/series/{self.lookup(series_uid, 'Series')}/archive")
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            z.extractall(folder)
