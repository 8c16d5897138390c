"""End to end with the bundled demo weights: process.py (GC) and `pdac detect` on phantoms."""

import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import TEST_INPUT, TEST_OUTPUT, WEIGHTS, assert_valid_detection_map, pdac, process

SAMPLE = next((TEST_INPUT / "images" / "venous-ct").glob("*.mha"))


@pytest.fixture(scope="module")
def gc_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gc-output")
    r = process(TEST_INPUT, out)
    return r, out


def test_process_writes_gc_valid_outputs(gc_run):
    r, out = gc_run
    assert r.returncode == 0, r.stderr
    det = sitk.ReadImage(str(out / "images" / "pdac-detection-map" / "detection_map.mha"))
    arr = assert_valid_detection_map(det, sitk.ReadImage(str(SAMPLE)))
    likelihood = json.loads((out / "pdac-likelihood.json").read_text())
    assert isinstance(likelihood, float) and 0 <= likelihood <= 1
    assert likelihood == pytest.approx(float(arr.max()), abs=1e-6)
    assert not list(out.rglob("*.part*")), "temporary files left behind"


def test_process_matches_the_committed_expected_outputs(gc_run):
    _, out = gc_run
    got = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "images" / "pdac-detection-map" / "detection_map.mha")))
    expected = TEST_OUTPUT / "images" / "pdac-detection-map" / "detection_map.mha"
    want = sitk.GetArrayFromImage(sitk.ReadImage(str(expected)))
    assert json.loads((out / "pdac-likelihood.json").read_text()) == pytest.approx(
        json.loads((TEST_OUTPUT / "pdac-likelihood.json").read_text()), abs=0.02)
    support_got, support_want = got > 0, want > 0
    union = (support_got | support_want).sum()
    assert union == 0 or (support_got & support_want).sum() / union > 0.9
    assert np.abs(got - want).max() < 0.05


@pytest.fixture(scope="module")
def detect_run(tmp_path_factory, phantom_scans):
    folder = tmp_path_factory.mktemp("detect-in")
    for path in phantom_scans.values():
        shutil.copy(path, folder / path.name)
    (folder / "notes.json").write_text("{not even json")  # other files in the folder are ignored
    out = tmp_path_factory.mktemp("detect-out")
    r = pdac("detect", str(folder), "-o", str(out), "--overlays")
    return r, out, phantom_scans


def test_detect_handles_identity_flipped_and_oblique_scans(detect_run):
    r, out, scans = detect_run
    assert r.returncode == 0, r.stderr[-3000:]
    likelihoods = json.loads((out / "pdac-likelihood.json").read_text())
    assert set(likelihoods) == {f"case_{o}" for o in scans}
    for orientation, path in scans.items():
        case = f"case_{orientation}"
        det = sitk.ReadImage(str(out / f"{case}_detection_map.mha"))
        arr = assert_valid_detection_map(det, sitk.ReadImage(str(path)))
        assert likelihoods[case] == pytest.approx(float(arr.max()), abs=1e-6)
        lesions = json.loads((out / f"{case}_lesions.json").read_text())
        assert lesions["pancreas_found"] is True
        assert [le["likelihood"] for le in lesions["lesions"]] == sorted(
            [le["likelihood"] for le in lesions["lesions"]], reverse=True)
        for le in lesions["lesions"]:
            lo, hi = np.asarray(le["bbox_index_xyz"])
            assert np.all(lo <= hi) and np.all(hi < det.GetSize())
            # the reported world centroid lies inside the reported box
            centre = np.asarray(det.TransformPhysicalPointToContinuousIndex(le["centroid_world_mm"]))
            assert np.all(centre >= lo - 0.5) and np.all(centre <= hi + 0.5)
            assert le["volume_mm3"] > 0
        assert (out / f"{case}_overlay.png").stat().st_size > 10_000


def test_flipping_the_scan_array_does_not_move_the_detections(tmp_path, phantom_scans):
    """The same physical scan stored with flipped axes gives the same findings in world space."""
    scan = sitk.ReadImage(str(phantom_scans["identity"]))
    flipped = sitk.Flip(scan, [True, False, True])  # same physical space, reversed storage order
    sitk.WriteImage(flipped, str(tmp_path / "flipped.mha"))
    sitk.WriteImage(scan, str(tmp_path / "plain.mha"))
    out = tmp_path / "out"
    r = pdac("detect", str(tmp_path / "plain.mha"), str(tmp_path / "flipped.mha"), "-o", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    likelihoods = json.loads((out / "pdac-likelihood.json").read_text())
    assert likelihoods["plain"] == pytest.approx(likelihoods["flipped"], abs=0.1)
    top = [json.loads((out / f"{c}_lesions.json").read_text())["lesions"][:1] for c in ("plain", "flipped")]
    if top[0] and top[1] and top[0][0]["likelihood"] > 0.3:
        assert np.linalg.norm(np.subtract(top[0][0]["centroid_world_mm"], top[1][0]["centroid_world_mm"])) < 15


def test_no_pancreas_falls_back_and_still_writes_valid_output(tmp_path):
    """An all-air scan: no pancreas, a warning, and a valid (empty) detection map."""
    air = sitk.Image([96, 96, 40], sitk.sitkInt16) - 1000
    air.SetSpacing([3.0, 3.0, 4.0])
    gc_in = tmp_path / "in" / "images" / "venous-ct"
    gc_in.mkdir(parents=True)
    sitk.WriteImage(air, str(gc_in / "air.mha"))
    r = process(tmp_path / "in", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    assert "no pancreas found" in r.stderr
    det = sitk.ReadImage(str(tmp_path / "out" / "images" / "pdac-detection-map" / "detection_map.mha"))
    assert_valid_detection_map(det, air)
    assert json.loads((tmp_path / "out" / "pdac-likelihood.json").read_text()) == 0.0


def test_a_failing_case_does_not_stop_the_batch(tmp_path, phantom_scans):
    (tmp_path / "garbage.mha").write_bytes(b"\x00\x01 not an image" * 100)
    out = tmp_path / "out"
    r = pdac("detect", str(tmp_path / "garbage.mha"), str(phantom_scans["identity"]), "-o", str(out))
    assert r.returncode == 1
    assert "garbage" in r.stderr and "1 ok, 1 failed" in r.stderr
    assert set(json.loads((out / "pdac-likelihood.json").read_text())) == {"case_identity"}
    assert not (out / "garbage_detection_map.mha").exists()


def test_shard_processes_every_nth_case(tmp_path, phantom_scans):
    out = tmp_path / "out"
    r = pdac("detect", *map(str, sorted(phantom_scans.values())), "-o", str(out), "--shard", "1/3", "--no-tta")
    assert r.returncode == 0, r.stderr[-2000:]
    shard = json.loads((out / "pdac-likelihood.shard1of3.json").read_text())
    assert list(shard) == [sorted(p.name for p in phantom_scans.values())[1].removesuffix("_0000.mha")]


def test_two_cpu_runs_are_bit_identical(tmp_path, phantom_scans):
    outs = []
    for i in range(2):
        out = tmp_path / f"run{i}"
        r = pdac("detect", str(phantom_scans["oblique"]), "-o", str(out))
        assert r.returncode == 0, r.stderr[-2000:]
        outs.append(out)
    a, b = (sitk.GetArrayFromImage(sitk.ReadImage(str(o / "case_oblique_detection_map.mha"))) for o in outs)
    assert np.array_equal(a, b)
    assert (outs[0] / "pdac-likelihood.json").read_text() == (outs[1] / "pdac-likelihood.json").read_text()


def test_corrupt_weights_are_refused_before_loading(tmp_path, phantom_scans):
    weights = tmp_path / "weights"
    shutil.copytree(WEIGHTS, weights)
    ckpt = next((weights / "lesion").rglob("*.pth"))
    ckpt.write_bytes(ckpt.read_bytes()[:-10] + b"0123456789")
    out = tmp_path / "out"
    r = pdac("detect", str(phantom_scans["identity"]), "-o", str(out), "--weights", str(weights))
    assert r.returncode == 4
    assert ckpt.name in r.stderr and "checksum" in r.stderr
    assert not list(out.glob("*.mha"))
