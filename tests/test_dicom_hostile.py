"""`pdac send` against hostile or broken archives, through the CLI: each gives one clear line, a non-zero exit, and
a report of what arrived; nothing the peer sends reaches our log unfiltered.

The archives are real DICOM peers (pynetdicom servers in this process, on 127.0.0.1) that misbehave on purpose:
one refuses every object with an error comment that tries to forge log lines, one answers success but floods
the arrival check with C-FIND answers, one agrees to store but not to be queried, and a plain TCP listener that
answers the association request with garbage. None of them is `pdac`'s code: the sender under test is unchanged."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pydicom
import pytest
from conftest import pdac
from dicom_series import ROOT
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import Comprehensive3DSRStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

FORGED = "\nERROR pdac: FORGED LINE\r\x1b[2J"


def sr_file(folder: Path, name: str) -> Path:
    """A small (empty) Comprehensive 3D SR header: enough for C-STORE and C-FIND, which read only the UIDs."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = Comprehensive3DSRStorage
    meta.MediaStorageSOPInstanceUID = generate_uid(prefix=ROOT)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = Comprehensive3DSRStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid(prefix=ROOT)
    ds.SeriesInstanceUID = generate_uid(prefix=ROOT)
    ds.PatientID = "HOSTILE-1"
    ds.Modality = "SR"
    path = folder / name
    ds.save_as(path, enforce_file_format=True)
    return path


def serve(handlers: list, find: bool = True):
    ae = AE(ae_title="EVIL")
    ae.add_supported_context(Comprehensive3DSRStorage, ExplicitVRLittleEndian)
    if find:
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    return ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)


@pytest.fixture
def files(tmp_path) -> list[Path]:
    return [sr_file(tmp_path, "a_sr.dcm"), sr_file(tmp_path, "b_sr.dcm")]


def send(server, files, *extra: str):
    port = server.socket.getsockname()[1]
    r = pdac("send", "--to", f"EVIL@127.0.0.1:{port}", "--send-timeout", "5", *extra, *map(str, files), timeout=120)
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    return r, r.stderr.strip().splitlines()


def test_refusals_are_reported_and_a_forged_error_comment_stays_on_one_line(files):
    def refuse(event):
        status = Dataset()
        status.Status = 0xA700
        status.ErrorComment = f"disk full{FORGED}"[:64]
        return status

    server = serve([(evt.EVT_C_STORE, refuse)])
    try:
        r, lines = send(server, files)
    finally:
        server.shutdown()
    assert r.returncode == 6, r.stderr[-2000:]
    assert not any(ln.startswith("ERROR pdac: FORGED") for ln in lines), lines  # no line of the peer's making
    assert lines[-1].count("FORGED") == 2 and "\x1b" not in r.stderr, lines[-1]  # kept, but on our one line
    assert "0 of 2 object(s) arrived; NOT arrived: a_sr.dcm (refused: status 0xA700 disk full?ERROR" in lines[-1]


def test_a_flood_of_find_answers_is_cut_off_and_the_objects_reported_unverified(files):
    stored: list[str] = []

    def store(event):
        stored.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    def flood(event):
        for _ in range(100_000):
            if event.is_cancelled:
                return
            match = Dataset()
            match.QueryRetrieveLevel = "IMAGE"
            match.SOPInstanceUID = generate_uid(prefix=ROOT)
            yield 0xFF00, match

    server = serve([(evt.EVT_C_STORE, store), (evt.EVT_C_FIND, flood)])
    try:
        r, lines = send(server, files)
    finally:
        server.shutdown()
    assert len(stored) == 2
    assert r.returncode == 0, r.stderr[-2000:]  # stored (success status), but arrival could not be checked
    assert "over 100 C-FIND answers for one instance; aborting the association" in r.stderr
    assert lines[-1].endswith("2 of 2 object(s) arrived (2 not verified: the archive does not answer C-FIND)"), lines


def test_an_archive_that_cannot_be_queried_is_trusted_on_its_status_and_says_so(files):
    server = serve([(evt.EVT_C_STORE, lambda event: 0x0000)], find=False)
    try:
        r, lines = send(server, files)
    finally:
        server.shutdown()
    assert r.returncode == 0, r.stderr[-2000:]
    assert lines[-1].endswith("2 of 2 object(s) arrived (2 not verified: the archive does not answer C-FIND)"), lines


def test_an_archive_that_does_not_take_the_sop_class_is_one_line(tmp_path, files):
    ae = AE(ae_title="EVIL")
    ae.add_supported_context("1.2.840.10008.5.1.4.1.1.2", ExplicitVRLittleEndian)  # CT only
    server = ae.start_server(("127.0.0.1", 0), block=False)
    try:
        r, lines = send(server, files)
    finally:
        server.shutdown()
    assert r.returncode == 6
    assert lines[-1].endswith("NOT arrived: a_sr.dcm (not sent: the archive does not accept Comprehensive 3D SR "
                              "Storage), b_sr.dcm (not sent: the archive does not accept Comprehensive 3D SR "
                              "Storage)"), lines[-1]


def test_garbage_instead_of_an_association_answer_is_one_line(files):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)

        def answer_garbage():
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"\x02\x00\x7f\xff\xff\xff" + b"HTTP/1.1 400 Bad Request\r\n" * 8)

        thread = threading.Thread(target=answer_garbage, daemon=True)
        thread.start()
        port = listener.getsockname()[1]
        r = pdac("send", "--to", f"EVIL@127.0.0.1:{port}", "--send-timeout", "3", *map(str, files), timeout=120)
        thread.join(timeout=10)
    assert r.returncode == 6 and "Traceback" not in r.stderr, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.endswith("0 of 2 object(s) arrived; NOT arrived: a_sr.dcm (not sent: the archive broke off the "
                         "association request (closed the connection, aborted, or answered with something that is "
                         "not DICOM)), b_sr.dcm (not sent: the archive broke off the association request (closed the "
                         "connection, aborted, or answered with something that is not DICOM))"), last


def test_a_file_that_is_not_dicom_is_refused_before_any_connection(tmp_path, files):
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom at all" * 10)
    r = pdac("send", "--to", "EVIL@127.0.0.1:1", str(files[0]), str(junk))
    assert r.returncode == 6 and "Traceback" not in r.stderr
    assert "junk.dcm: not a readable DICOM file" in r.stderr.strip().splitlines()[-1]
    assert pydicom.dcmread(files[0]).PatientID == "HOSTILE-1"  # untouched


def test_an_unknown_host_is_one_line(files):
    r = pdac("send", "--to", "PACS@no-such-host.invalid:4242", "--send-timeout", "5", *map(str, files), timeout=120)
    assert r.returncode == 6 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "(not sent: unknown host 'no-such-host.invalid'" in r.stderr.strip().splitlines()[-1]


def test_an_archive_that_never_answers_a_c_store_times_out_in_one_line(files):
    def stall(event):
        time.sleep(6)
        return 0x0000

    server = serve([(evt.EVT_C_STORE, stall)])
    try:
        port = server.socket.getsockname()[1]
        r = pdac("send", "--to", f"EVIL@127.0.0.1:{port}", "--send-timeout", "2", *map(str, files), timeout=120)
    finally:
        server.shutdown()
    assert r.returncode == 6 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1].endswith(
        "0 of 2 object(s) arrived; NOT arrived: a_sr.dcm (not sent: association lost (aborted or timed out)), "
        "b_sr.dcm (not sent: association lost before it)"), r.stderr[-1000:]
