"""Output names and late signals (issue #30, class 6): a case id whose outputs fit the file system's name
limit is written (the temporaries' names are shortened, never longer than the final names' limit); a
SIGTERM after process.py's outputs are complete exits 0, keeps them and claims nothing was removed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import SimpleITK as sitk
from conftest import REPO, assert_valid_detection_map, pdac


def test_a_case_id_whose_outputs_just_fit_the_name_limit_is_written(phantom_scans, tmp_path):
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    case = "c" * (limit - len("_detection_map.mha"))  # the longest output name is exactly the limit
    scan = tmp_path / "in" / f"{case}.mha"
    scan.parent.mkdir()
    shutil.copy(phantom_scans["identity"], scan)
    r = pdac("detect", str(scan), "-o", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr[-2000:]
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert f"{case}_detection_map.mha" in names and f"{case}_lesions.json" in names
    assert not [n for n in names if n.startswith(".")], "temporaries left behind"


def test_a_case_id_too_long_for_its_outputs_is_one_line(phantom_scans, tmp_path):
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    case = "d" * (limit - len(".mha"))  # the scan's name fits, its outputs' names do not
    scan = tmp_path / "in" / f"{case}.mha"
    scan.parent.mkdir()
    shutil.copy(phantom_scans["identity"], scan)
    r = pdac("detect", str(scan), "-o", str(tmp_path / "out"))
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "name too long" in r.stderr.lower(), r.stderr[-2000:]
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(("d", "."))]


# process.py's main, with SIGTERM sent to itself the moment its outputs are written (no mock: the real
# writer runs, then the signal arrives, as GC's time limit could make it arrive).
LATE_SIGTERM = """
import os, signal, sys
sys.path.insert(0, {repo!r})
import pdac.infer.io as io
real = io.write_files_atomic
def then_sigterm(*args, **kwargs):
    real(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGTERM)
io.write_files_atomic = then_sigterm
import process
sys.exit(process.main(["--input", {input!r}, "--output", {output!r}]))
"""


def test_sigterm_after_the_outputs_are_complete_exits_0_and_keeps_them(phantom_scans, tmp_path):
    case = tmp_path / "in" / "images" / "venous-ct"
    case.mkdir(parents=True)
    shutil.copy(phantom_scans["identity"], case / "scan.mha")
    out = tmp_path / "out"
    code = LATE_SIGTERM.format(repo=str(REPO), input=str(tmp_path / "in"), output=str(out))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and "partial outputs removed" not in r.stderr, r.stderr[-2000:]
    assert "PDAC likelihood" in r.stderr.strip().splitlines()[-1]
    assert 0 <= json.loads((out / "pdac-likelihood.json").read_text()) <= 1
    det = sitk.ReadImage(str(out / "images" / "pdac-detection-map" / "detection_map.mha"))
    assert_valid_detection_map(det, sitk.ReadImage(str(case / "scan.mha")))
