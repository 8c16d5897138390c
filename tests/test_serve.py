"""The invoke server (`python -m pdac.serve`), as a real process on a real port, driven the way GC's runtime wrapper
drives it: /health until 200, then per case the input folder swapped (a symlink re-pointed), the output folder
emptied, `POST /invoke`. Every case is also run through process.py: the server must give the same outputs for a
good case and the same one-line reason and exit code for a bad one."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import (
    REPO,
    TEST_INPUT,
    TEST_OUTPUT,
    assert_valid_detection_map,
    process,
    weights_with_a_forged_hash,
)

from pdac.lab.bench_gc import free_port, http_status

MAP = Path("images/pdac-detection-map/detection_map.mha")
LIKELIHOOD = Path("pdac-likelihood.json")
SCANS = Path("images/venous-ct")
LOADED = "models loaded in"


def request(url: str, method: str = "GET", timeout: float = 600) -> tuple[int, dict]:
    status, body = http_status(url, method, timeout)
    return status, json.loads(body or b"null")


class Server:
    """`python -m pdac.serve` on a free port; stderr goes to a file that the tests read while it runs."""

    def __init__(self, folder: Path, env: dict | None = None, port: int | None = None):
        self.folder = folder
        self.input, self.output = folder / "input", folder / "output"
        self.output.mkdir(parents=True)
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = folder / "server.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pdac.serve", "--input", str(self.input), "--output", str(self.output),
                 "--port", str(self.port)], stdout=subprocess.DEVNULL, stderr=log, cwd=REPO,
                env={**os.environ, **(env or {})})

    def health(self) -> int | None:
        try:
            return request(f"{self.base}/health", timeout=10)[0]
        except OSError:
            return None  # not listening (yet, or any more)

    def wait_healthy(self, timeout: float = 300) -> list[int | None]:
        """The /health answers seen until 200 (None: connection refused)."""
        seen, deadline = [], time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            seen.append(self.health())
            if seen[-1] == 200:
                return seen
            time.sleep(0.05)
        pytest.fail(f"server not healthy (exit {self.proc.poll()}): {self.stderr()[-2000:]}")

    def point(self, folder: Path) -> None:
        """As GC's wrapper prepares a case: empty the output, re-point the input (a new symlink)."""
        for p in self.output.iterdir():
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        if self.input.is_symlink():
            self.input.unlink()
        self.input.symlink_to(folder, target_is_directory=True)

    def case(self, folder: Path) -> tuple[int, dict]:
        """One case as GC's wrapper runs it: `point`, then POST /invoke."""
        self.point(folder)
        return request(f"{self.base}/invoke", "POST")

    def stderr(self) -> str:
        return self.log.read_text()

    def last_line(self) -> str:
        return [ln for ln in self.stderr().splitlines() if ln.strip()][-1]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


def gc_case(root: Path, name: str, *scans: Path | bytes) -> Path:
    """A GC input folder with the given scans (a path is copied, bytes are written as a .mha) and GC's JSON files."""
    folder = root / name
    (folder / SCANS).mkdir(parents=True)
    for i, scan in enumerate(scans):
        target = folder / SCANS / (scan.name if isinstance(scan, Path) else f"{name}-{i}.mha")
        shutil.copyfile(scan, target) if isinstance(scan, Path) else target.write_bytes(scan)
    (folder / "inputs.json").write_text("[]")
    (folder / "clinical-information-pancreatic-ct.json").write_text('{"age": 60}')
    return folder


def tiny_scan(path: Path, seed: int) -> Path:
    """A small soft-tissue volume: the whole pipeline runs on it in about a second."""
    arr = np.where(np.random.default_rng(seed).random((24, 64, 64)) > 0.3, 40, -1000).astype(np.int16)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((3.0, 3.0, 4.0))
    sitk.WriteImage(img, str(path))
    return path


def exec_result(case: Path, out: Path, env: dict | None = None) -> tuple[int, str]:
    """process.py on the case: (exit code, last stderr line)."""
    r = process(case, out, env=env)
    return r.returncode, [ln for ln in r.stderr.splitlines() if ln.strip()][-1]


def files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def one_line(stderr_line: str) -> str:
    """The message of a log line `HH:MM:SS LEVEL logger: message`."""
    return stderr_line.split(": ", 1)[1]


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cases")
    scans = tmp_path_factory.mktemp("scans")
    return {
        "sample": TEST_INPUT,
        "tiny1": gc_case(root, "tiny1", tiny_scan(scans / "tiny1.mha", 1)),
        "tiny2": gc_case(root, "tiny2", tiny_scan(scans / "tiny2.mha", 2)),
        "garbage": gc_case(root, "garbage", b"this is not an image\n" * 10),
        "two-scans": gc_case(root, "two-scans", tiny_scan(scans / "a.mha", 3), tiny_scan(scans / "b.mha", 4)),
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("server"))
    s.seen = s.wait_healthy()
    yield s
    s.stop()


def test_health_is_503_while_loading_then_200(server):
    assert server.seen[-1] == 200
    assert 503 in server.seen, server.seen  # it listened while the models were loading
    # then only 503s (None: a call that timed out on a busy machine) until the 200
    assert set(server.seen[server.seen.index(503):-1]) <= {503, None}, server.seen
    assert server.stderr().count(LOADED) == 1


def test_cases_in_a_row_match_process_py(server, cases, tmp_path):
    # 1. the GC sample: the expected outputs
    status, body = server.case(cases["sample"])
    assert status == 201, body
    assert files(server.output) == {MAP.as_posix(), LIKELIHOOD.as_posix()}
    assert json.loads((server.output / LIKELIHOOD).read_text()) == pytest.approx(
        json.loads((TEST_OUTPUT / LIKELIHOOD).read_text()), abs=0.02)
    scan = sitk.ReadImage(str(next((TEST_INPUT / SCANS).glob("*.mha"))))
    got = assert_valid_detection_map(sitk.ReadImage(str(server.output / MAP)), scan)
    assert np.abs(got - sitk.GetArrayFromImage(sitk.ReadImage(str(TEST_OUTPUT / MAP)))).max() < 0.05

    # 2. a bad case: the same one line and exit code as process.py, as the server's last line; no outputs
    for bad in ("garbage", "two-scans"):
        status, body = server.case(cases[bad])
        code, line = exec_result(server.input, tmp_path / f"exec-{bad}")  # the same --input
        assert code == 3 and status == 422, (code, status, body)
        assert body == {"exit_code": code, "error": one_line(line)}
        assert one_line(server.last_line()) == body["error"] and " ERROR " in server.last_line()
        assert files(server.output) == set()

        # 3. ... and the next good case still succeeds, with exactly process.py's outputs
        good = "tiny1" if bad == "garbage" else "tiny2"
        status, body = server.case(cases[good])
        assert status == 201, body
        code, _ = exec_result(server.input, tmp_path / f"exec-{good}")
        assert code == 0
        assert (server.output / LIKELIHOOD).read_bytes() == (tmp_path / f"exec-{good}" / LIKELIHOOD).read_bytes()
        a = sitk.GetArrayFromImage(sitk.ReadImage(str(server.output / MAP)))
        b = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / f"exec-{good}" / MAP)))
        assert np.array_equal(a, b)
        assert body["likelihood"] == json.loads((server.output / LIKELIHOOD).read_text())

    # loaded once, verified once, for all five cases
    assert server.stderr().count(LOADED) == 1
    assert server.stderr().count("using weights") == 1


def test_invoke_refuses_a_second_case_while_one_runs(server, cases):
    """Two requests at once: one runs the case (201), the other is refused (409), whichever arrives first."""
    server.point(cases["tiny1"])
    results = []
    start = threading.Barrier(2)

    def post():
        start.wait()
        results.append(request(f"{server.base}/invoke", "POST"))

    threads = [threading.Thread(target=post) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=900)
    statuses = sorted(status for status, _ in results)
    if statuses == [201, 201]:
        pytest.skip("the first case finished before the second request arrived")
    assert statuses == [201, 409], results
    assert "one case at a time" in next(body for status, body in results if status == 409)["error"]


def test_sigterm_between_cases_stops_at_once_with_exit_0(server):
    t0 = time.monotonic()
    assert server.stop() == 0
    assert time.monotonic() - t0 < 5, "GC kills the server 5 s after SIGTERM"
    assert server.health() is None


def test_sigterm_during_a_case_removes_its_outputs(tmp_path, phantom_scans):
    s = Server(tmp_path / "server")
    try:
        s.wait_healthy()
        case = gc_case(tmp_path, "phantom", phantom_scans["identity"])
        answer = []
        t = threading.Thread(target=lambda: answer.append(s.case(case)))
        t.start()
        deadline = time.monotonic() + 300
        while "stage 1 done" not in s.stderr():
            assert time.monotonic() < deadline and s.proc.poll() is None, s.stderr()[-2000:]
            time.sleep(0.05)
        t0 = time.monotonic()
        s.proc.send_signal(signal.SIGTERM)
        code = s.proc.wait(timeout=30)
        t.join(timeout=30)
    finally:
        s.stop()
    assert code == 128 + signal.SIGTERM, s.stderr()[-2000:]
    assert time.monotonic() - t0 < 5
    assert answer == [(503, {"exit_code": 143, "error": "interrupted by SIGTERM; partial outputs removed"})]
    assert one_line(s.last_line()) == "interrupted by SIGTERM; partial outputs removed"
    assert "Traceback" not in s.stderr()
    assert files(s.output) == set()  # no temporaries, no map without its likelihood


def test_broken_model_mount_exits_with_the_weights_error_and_never_answers_200(tmp_path):
    mount, checkpoint = weights_with_a_forged_hash(tmp_path / "opt-ml-model")
    env = {"PDAC_GC_MODEL_DIR": str(mount)}

    s = Server(tmp_path / "server", env=env)
    seen = []
    while s.proc.poll() is None:
        seen.append(s.health())
        time.sleep(0.05)
    assert 200 not in seen, seen
    assert s.proc.returncode == 4, s.stderr()[-2000:]
    code, line = exec_result(TEST_INPUT, tmp_path / "exec", env=env)
    assert code == 4
    assert one_line(s.last_line()) == one_line(line)
    assert f"{mount}/{checkpoint}" in s.last_line() and "weights" in s.last_line()
    assert files(s.output) == set()


def test_a_taken_port_is_one_line_and_exit_2(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        s = Server(tmp_path / "server", port=taken.getsockname()[1])
        assert s.proc.wait(timeout=120) == 2
    assert f"cannot listen on 127.0.0.1:{s.port}" in s.last_line()
    assert LOADED not in s.stderr() and "Traceback" not in s.stderr()


def test_the_image_entrypoint_runs_the_method_it_was_built_for(cases, tmp_path):
    """`python -m pdac.serve.entrypoint` (the image's ENTRYPOINT): exec is process.py; anything but invoke/exec
    is one line and exit 2."""
    entry = [sys.executable, "-m", "pdac.serve.entrypoint", "--input", str(cases["garbage"])]
    r = subprocess.run([*entry, "--output", str(tmp_path / "out")], capture_output=True, text=True, cwd=REPO,
                       env={**os.environ, "PDAC_API_METHOD": "EXEC"}, timeout=300)
    code, line = exec_result(cases["garbage"], tmp_path / "exec")
    assert (r.returncode, one_line(r.stderr.strip().splitlines()[-1])) == (code, one_line(line)) and code == 3
    assert "uvicorn" not in r.stderr and LOADED not in r.stderr
    r = subprocess.run(entry, capture_output=True, text=True, cwd=REPO,
                       env={**os.environ, "PDAC_API_METHOD": "serve"}, timeout=300)
    assert r.returncode == 2 and "must be 'invoke' or 'exec'" in r.stderr.strip().splitlines()[-1]


def test_torch_info_chatter_cannot_follow_the_last_line(capsys):
    """torch's exit hooks log at INFO (FakeTensor cache stats) after the server's or process.py's one-line error,
    which must stay the last stderr line; importing torch resets its loggers' levels, so the handler filters."""
    import logging

    from pdac.logs import setup_logging

    setup_logging()
    logging.getLogger("torch._subclasses.fake_tensor").setLevel(logging.NOTSET)  # as torch's import leaves it
    logging.getLogger("pdac.serve").error("the reason")
    logging.getLogger("torch._subclasses.fake_tensor").info("FakeTensor cache stats:")
    logging.getLogger("torch").warning("a real warning")
    err = capsys.readouterr().err
    # (torch may have its own handler by now, set up by an earlier test: its warning's format is its own)
    assert "FakeTensor" not in err and "the reason" in err and "a real warning" in err, err
