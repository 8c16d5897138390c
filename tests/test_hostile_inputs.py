"""Issue 30, classes 2, 3, 4 and 8: sharding and merge, geometry, nesting depth, evaluation inputs. Each
test goes through the command line (`pdac ...` or process.py) and expects one line and a documented exit
code, never a traceback or a hang."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import REPO, WEIGHTS, pdac, process
from hypothesis import given, settings
from hypothesis import strategies as st

from pdac.errors import InputError
from pdac.infer.io import read_image
from pdac.safe_read import MAX_DEPTH, loads_json


def _last(r) -> str:
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    return r.stderr.strip().splitlines()[-1]


def _scan(path, origin=(0.0, 0.0, 0.0), direction=None, size=(8, 8, 8)):
    image = sitk.Image(list(size), sitk.sitkInt16)
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


def _deep_json(depth: int) -> str:
    return "[" * depth + "]" * depth


# ---- class 2: sharding and merge ----

def test_an_empty_shard_value_is_refused(tmp_path):
    r = pdac("detect", str(tmp_path / "none.mha"), "-o", str(tmp_path / "out"), "--shard=")
    assert r.returncode == 2
    assert "--shard expects K/N" in _last(r)


def test_a_shard_without_cases_writes_its_empty_file_and_the_merge_completes(tmp_path):
    scan = _scan(tmp_path / "in" / "only_0000.mha")
    out = tmp_path / "out"
    r = pdac("detect", str(scan), "-o", str(out), "--shard", "2/3")
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((out / "pdac-likelihood.shard2of3.json").read_text()) == {}
    (out / "pdac-likelihood.shard0of3.json").write_text('{"only": 0.25}')
    (out / "pdac-likelihood.shard1of3.json").write_text("{}")
    r = pdac("merge", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((out / "pdac-likelihood.json").read_text()) == {"only": 0.25}


def _merge_with_memory_cap(folder):
    """`pdac merge` under a 3 GB address-space cap: a merge that allocates from a file name fails fast."""
    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
    return subprocess.run([sys.executable, "-m", "pdac", "merge", str(folder)], capture_output=True, text=True,
                          timeout=300, cwd=REPO, preexec_fn=cap)


@pytest.mark.parametrize("name", ["pdac-likelihood.shard0of9999999999.json", "pdac-likelihood.shard5of3.json",
                                  "pdac-likelihood.shard01of2.json", "pdac-likelihood.shard٠of2.json",
                                  "pdac-likelihood.shard0of2.json.bak"])
def test_merge_reads_only_names_that_shard_writes(tmp_path, name):
    (tmp_path / "pdac-likelihood.shard0of2.json").write_text('{"a": 0.1}')
    (tmp_path / "pdac-likelihood.shard1of2.json").write_text('{"b": 0.2}')
    (tmp_path / name).write_text('{"b": 0.9}')  # a second claim on shard 1, or a crafted count
    r = _merge_with_memory_cap(tmp_path)
    assert r.returncode == 3, r.stderr[-2000:]
    assert "not a name that `pdac detect --shard K/N` writes" in _last(r)
    assert not (tmp_path / "pdac-likelihood.json").exists()


def test_merge_refuses_a_fifo_named_like_a_shard_without_hanging(tmp_path):
    (tmp_path / "pdac-likelihood.shard0of2.json").write_text('{"a": 0.1}')
    os.mkfifo(tmp_path / "pdac-likelihood.shard1of2.json")
    r = pdac("merge", str(tmp_path), timeout=600)  # a hang ends here
    assert r.returncode == 3
    assert "pdac-likelihood.shard1of2.json: not a regular file" in _last(r)


def test_detect_refuses_a_fifo_as_its_likelihood_file_without_hanging(tmp_path):
    scan = _scan(tmp_path / "in" / "a_0000.mha")
    out = tmp_path / "out"
    out.mkdir()
    os.mkfifo(out / "pdac-likelihood.json")
    r = pdac("detect", str(scan), "-o", str(out), timeout=600)  # a hang ends here
    assert r.returncode == 5
    assert "not a readable JSON object" in _last(r)


# ---- class 3: geometry ----

def test_nifti_with_a_nan_sform_offset_is_refused_in_one_line(tmp_path):
    nib = pytest.importorskip("nibabel")
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[0, 3] = np.nan
    img = nib.Nifti1Image(np.zeros((8, 8, 8), np.int16), None)
    img.set_sform(affine, code=1)
    img.set_qform(None, code=0)
    (tmp_path / "in").mkdir()
    nib.save(img, tmp_path / "in" / "nan_0000.nii.gz")
    r = pdac("detect", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--device", "cpu")
    assert r.returncode == 1, r.stderr[-2000:]
    assert "nan_0000.nii.gz: non-finite origin" in r.stderr
    assert "AssertionError" not in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("origin,direction,message", [
    ((1e308, 0.0, 0.0), None, "absurd origin (1e+308, 0, 0)"),
    ((0.0, -2e6, 0.0), None, "absurd origin"),
    ((0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 5), "is not orthonormal"),
])
def test_process_refuses_absurd_geometry_in_one_line(tmp_path, origin, direction, message):
    _scan(tmp_path / "input" / "images" / "venous-ct" / "scan.mha", origin, direction)
    r = process(tmp_path / "input", tmp_path / "output")
    assert r.returncode == 3, r.stderr[-2000:]
    assert message in _last(r)
    assert not (tmp_path / "output" / "pdac-likelihood.json").exists()


finite_or_not = st.floats(allow_nan=True, allow_infinity=True, width=64)


@settings(max_examples=60, deadline=None)
@given(st.tuples(finite_or_not, finite_or_not, finite_or_not),
       st.tuples(*[st.floats(0.01, 100)] * 3), st.sampled_from(["mha", "nii.gz"]))
def test_the_image_reader_returns_usable_geometry_or_refuses_in_one_line(tmp_path_factory, origin, spacing, ext):
    path = tmp_path_factory.mktemp("geo") / f"scan.{ext}"
    image = sitk.Image([3, 3, 3], sitk.sitkInt16)
    image.SetSpacing(spacing)
    try:
        image.SetOrigin(origin)
        sitk.WriteImage(image, str(path))
    except RuntimeError:
        return  # SimpleITK refuses to write it: nothing to read
    try:
        read = read_image(path)
    except InputError as e:
        assert "\n" not in str(e)
        return
    assert np.all(np.isfinite(read.GetOrigin())) and max(map(abs, read.GetOrigin())) <= 1e6
    assert np.all(np.isfinite(read.GetSpacing())) and min(read.GetSpacing()) > 0


# ---- class 4: nesting depth ----

@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5000), st.sampled_from(["[", "{\"a\":"]))
def test_the_json_reader_parses_or_refuses_any_depth_in_one_line(depth, opener):
    closer = "]" if opener == "[" else "}"
    text = opener * depth + "0" + closer * depth
    try:
        value = loads_json(text, "x.json")
    except InputError as e:
        assert depth > MAX_DEPTH and "nested" in str(e) and "\n" not in str(e)
        return
    assert depth <= MAX_DEPTH and value == json.loads(text)


def test_merge_refuses_a_deeply_nested_shard_file(tmp_path):
    (tmp_path / "pdac-likelihood.shard0of1.json").write_text(_deep_json(100_000))
    r = pdac("merge", str(tmp_path))
    assert r.returncode == 3
    assert "nested 100000 levels deep" in _last(r)


def _weights_copy(tmp_path):
    dst = tmp_path / "weights"
    shutil.copytree(WEIGHTS, dst)
    return dst


def test_weights_manifest_refuses_a_deeply_nested_model_card(tmp_path):
    weights = _weights_copy(tmp_path)
    (weights / "model.json").write_text(_deep_json(50_000))
    r = pdac("weights-manifest", str(weights))
    assert r.returncode == 4
    assert "cannot read the model card" in _last(r) and "nested" in _last(r)


@pytest.mark.parametrize("target", ["manifest.json", "lesion/plans.json"])
def test_detect_refuses_deeply_nested_weights_json(tmp_path, target):
    weights = _weights_copy(tmp_path)
    (weights / target).write_text(_deep_json(50_000))
    if target != "manifest.json":  # the manifest must still match, so that plans.json is the refused file
        r = pdac("weights-manifest", str(weights))
        assert r.returncode == 0, r.stderr[-2000:]
    scan = _scan(tmp_path / "in" / "a_0000.mha")
    r = pdac("detect", str(scan), "-o", str(tmp_path / "out"), "--weights", str(weights), "--device", "cpu")
    assert r.returncode == 4, r.stderr[-2000:]
    assert "nested 50000 levels deep" in _last(r)


def test_a_very_deep_folder_tree_is_refused_in_one_line(tmp_path):
    folder = tmp_path / "in"
    levels = [folder.joinpath(*["d"] * i) for i in range(1101)]  # deeper than Python's recursion limit
    try:
        for level in levels:  # one at a time: mkdir(parents=True) would itself recurse too deep
            level.mkdir()
        r = pdac("detect", str(folder), "-o", str(tmp_path / "out"))
    finally:  # and removed the same way: pytest's own clean-up (shutil.rmtree) recurses
        for level in reversed(levels):
            if level.is_dir():
                level.rmdir()
    assert r.returncode == 3, r.stderr[-2000:]
    assert "folders nested more than 32 levels deep" in _last(r)


# ---- class 8: evaluation inputs ----

def _evaluation_inputs(tmp_path):
    maps, labels = tmp_path / "maps", tmp_path / "labels"
    for i, lesion in enumerate((True, False)):
        label = np.zeros((8, 8, 8), np.uint8)
        label[3:5, 3:5, 3:5] = 1 if lesion else 0
        det = (label * 0.8).astype(np.float32)
        for folder, array, name in ((labels, label, f"c{i}.nii.gz"), (maps, det, f"c{i}_detection_map.mha")):
            folder.mkdir(exist_ok=True)
            sitk.WriteImage(sitk.GetImageFromArray(array), str(folder / name))
    return maps, labels


@pytest.mark.parametrize("value", [1.5, -0.2])
def test_evaluate_refuses_likelihoods_outside_0_1_as_merge_does(tmp_path, value):
    maps, labels = _evaluation_inputs(tmp_path)
    likelihoods = tmp_path / "l.json"
    likelihoods.write_text(json.dumps({"c0": value, "c1": 0.1}))
    r = pdac("evaluate", "--detections", str(maps), "--labels", str(labels), "--likelihoods", str(likelihoods),
             "-o", str(tmp_path / "report"), "--bootstrap", "0")
    assert r.returncode == 3, r.stderr[-2000:]
    assert "likelihood of c0 is not a number in [0, 1]" in _last(r)


def test_evaluate_refuses_a_deeply_nested_likelihood_file(tmp_path):
    maps, labels = _evaluation_inputs(tmp_path)
    (tmp_path / "l.json").write_text(_deep_json(100_000))
    r = pdac("evaluate", "--detections", str(maps), "--labels", str(labels), "--likelihoods",
             str(tmp_path / "l.json"), "-o", str(tmp_path / "report"), "--bootstrap", "0")
    assert r.returncode == 3
    assert "nested 100000 levels deep" in _last(r)


@pytest.mark.parametrize("where", ["maps", "maps/report", "labels"])
def test_evaluate_refuses_a_report_folder_in_an_input_folder(tmp_path, where):
    maps, labels = _evaluation_inputs(tmp_path)
    r = pdac("evaluate", "--detections", str(maps), "--labels", str(labels), "-o", str(tmp_path / where),
             "--bootstrap", "0")
    assert r.returncode == 2, r.stderr[-2000:]
    assert "must not be the input folder" in _last(r)
    assert not (maps / "metrics.json").exists() and not (maps / "report" / "metrics.json").exists()


def test_detect_refuses_an_output_folder_that_is_an_input_folder(tmp_path):
    scan = _scan(tmp_path / "in" / "a_0000.mha")
    r = pdac("detect", str(scan.parent), "-o", str(scan.parent))
    assert r.returncode == 2
    assert "must not be an input folder" in _last(r)


# ---- class 7: text from inputs cannot forge log lines ----

FORGED = "12:00:00 ERROR pdac: forged"


def test_a_case_id_or_model_card_name_with_a_newline_cannot_forge_a_log_line(tmp_path):
    weights = _weights_copy(tmp_path)
    card = json.loads((weights / "model.json").read_text())
    card["name"] = f"demo\n{FORGED} by the card"  # the demo card is synthetic: its name is logged
    (weights / "model.json").write_text(json.dumps(card))
    r = pdac("weights-manifest", str(weights))
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(r.stdout.strip().splitlines()) == 1 and "demo\\n12:00:00" in r.stdout
    scan = tmp_path / "in" / f"x\n{FORGED} by the name_0000.mha"
    scan.parent.mkdir()
    scan.write_bytes(b"not an image")
    r = pdac("detect", str(scan.parent), "-o", str(tmp_path / "out"), "--weights", str(weights), "--device", "cpu")
    assert r.returncode == 1, r.stderr[-2000:]
    assert not [line for line in r.stderr.splitlines() if line.startswith(FORGED)], r.stderr[-3000:]
    assert "demo\\n12:00:00 ERROR pdac: forged by the card" in r.stderr
    assert "x\\n12:00:00 ERROR pdac: forged by the name" in r.stderr
