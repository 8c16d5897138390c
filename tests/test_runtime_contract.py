"""The GC runtime contract, natively: non-root user, no network, read-only input, unwritable HOME,
empty TMPDIR. (The same contract inside the container image is checked by test.sh.)"""

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import SimpleITK as sitk
from conftest import REPO, TEST_INPUT, assert_valid_detection_map, run

NOBODY = 65534


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("setpriv"),
                    reason="needs root, unshare and setpriv to drop privileges and the network")
def test_process_runs_as_nobody_offline_with_read_only_input():
    base = Path(tempfile.mkdtemp(prefix="pdac-contract-", dir="/tmp"))
    try:
        base.chmod(0o755)
        inp = base / "input"
        shutil.copytree(TEST_INPUT, inp)
        for p in [inp, *inp.rglob("*")]:
            p.chmod(0o555 if p.is_dir() else 0o444)  # read-only, owned by root
        out, tmp, home = base / "output", base / "tmp", base / "home"
        out.mkdir()
        tmp.mkdir()
        home.mkdir(mode=0o555)  # exists but is not writable
        os.chown(out, NOBODY, NOBODY)
        os.chown(tmp, NOBODY, NOBODY)
        env = {"HOME": str(home), "TMPDIR": str(tmp), "PATH": os.environ.get("PATH", "")}
        r = run(["unshare", "-n", "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                 sys.executable, str(REPO / "process.py"), "--input", str(inp), "--output", str(out)], env=env)
        assert r.returncode == 0, r.stderr[-3000:]
        scan = sitk.ReadImage(str(next((inp / "images" / "venous-ct").glob("*.mha"))))
        assert_valid_detection_map(sitk.ReadImage(str(out / "images" / "pdac-detection-map" / "detection_map.mha")),
                                   scan)
        assert 0 <= json.loads((out / "pdac-likelihood.json").read_text()) <= 1
        assert not any(home.iterdir())
    finally:
        for p in base.rglob("*"):
            if p.is_dir():
                p.chmod(0o755)
        shutil.rmtree(base, ignore_errors=True)
