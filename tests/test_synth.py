"""The label-map generator (`pdac synth`) on the two committed real maps (tests/data/labelmaps: AMOS amos_0013,
PANORAMA 100058), its refusals of bad maps through the CLI, and the real-scan measurement's scoring."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import REPO, pdac

from pdac.labels import Label

LABELMAPS = REPO / "tests" / "data" / "labelmaps"
AMOS = LABELMAPS / "amos" / "amos_0013.nii.gz"


@pytest.fixture(scope="module")
def synth_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    r = pdac("synth", "--labelmaps", str(LABELMAPS), "-o", str(out), "-n", "2", "--split", "val", "--seed", "3",
             "--positive-fraction", "0.5", "--previews", "1")
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def test_synth_writes_ct_like_volumes_with_panorama_labels(synth_set):
    truth = json.loads((synth_set / "truth.json").read_text())
    assert truth["synthetic"] is True and truth["generator"] == "labelmaps"
    assert truth["sources"] == {"amos": 1, "panorama": 1}
    cases = truth["cases"]
    assert len(cases) == 2 and {c["split"] for c in cases} == {"val"}
    assert sorted(c["lesion_present"] for c in cases) == [False, True]
    for c in cases:
        image = sitk.ReadImage(str(synth_set / "imagesTr" / f"{c['case']}_0000.nii.gz"))
        label = sitk.ReadImage(str(synth_set / "labelsTr" / f"{c['case']}.nii.gz"))
        assert image.GetSize() == label.GetSize() and image.GetSpacing() == label.GetSpacing()
        assert np.allclose(image.GetDirection(), label.GetDirection())
        hu, lab = sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(label)
        assert hu.dtype == np.int16 and set(np.unique(lab)) <= set(range(7))
        assert -1100 <= hu.min() and hu.max() <= 3100
        pancreas = np.isin(lab, (Label.PANCREAS, Label.PANCREATIC_DUCT, Label.PDAC))
        ml = pancreas.sum() * np.prod(image.GetSpacing()) / 1000
        assert 20 < ml < 200, ml  # amos_0013's gland is 42.5 mL before deformation
        assert (lab == Label.PDAC).any() == c["lesion_present"]
        body = hu > -500
        assert 0.1 < body.mean() < 0.97  # a body outline inside air (lungs count as air), not a filled box
        # a scanner's in-plane field of view (300-500 mm, wider only to hold the gland), not the map plus padding
        fov_mm = np.asarray(image.GetSize()[:2]) * np.asarray(image.GetSpacing()[:2])
        assert np.all(fov_mm < 505), fov_mm  # (the old generator: the map plus 60 mm padding, 520-620 mm)
        inside = np.argwhere(pancreas)
        assert inside[:, 1:].min() > 0 and np.all(inside[:, 1:].max(axis=0) < np.asarray(hu.shape[1:]) - 1)
        if c["lesion_present"]:
            # the hand-drawn lesion sits in the gland: it touches parenchyma or duct
            lesion = sitk.GetImageFromArray((lab == Label.PDAC).astype(np.uint8))
            near = sitk.GetArrayFromImage(sitk.BinaryDilate(lesion, [2, 2, 2]))
            assert np.isin(lab[near > 0], (Label.PANCREAS, Label.PANCREATIC_DUCT)).any()
            assert c["lesion"]["donor"] == "panorama/100058_00001"
    assert len(list((synth_set / "previews").glob("*.png"))) == 1


def test_synth_is_deterministic_per_seed(synth_set, tmp_path):
    r = pdac("synth", "--labelmaps", str(LABELMAPS), "-o", str(tmp_path), "-n", "2", "--split", "val", "--seed", "3",
             "--positive-fraction", "0.5", "--previews", "0")
    assert r.returncode == 0, r.stderr[-3000:]
    for case in json.loads((synth_set / "truth.json").read_text())["cases"]:
        for folder, suffix in (("imagesTr", "_0000"), ("labelsTr", "")):
            name = f"{case['case']}{suffix}.nii.gz"
            again = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / folder / name)))
            assert np.array_equal(again, sitk.GetArrayFromImage(sitk.ReadImage(str(synth_set / folder / name))))


def test_synth_never_mixes_splits(tmp_path):
    """Both committed patients hash to the validation split: asking for training volumes must refuse."""
    r = pdac("synth", "--labelmaps", str(LABELMAPS), "-o", str(tmp_path / "out"), "-n", "1", "--split", "train")
    assert r.returncode == 3, r.stderr[-2000:]
    assert "no train subjects or lesion donors" in r.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "out" / "truth.json").exists()


def _bad_copy(tmp_path, edit) -> str:
    """A label-map folder with the PANORAMA donor and an edited copy of amos_0013."""
    root = tmp_path / "maps"
    shutil.copytree(LABELMAPS / "panorama", root / "panorama")
    (root / "amos").mkdir(parents=True)
    image = sitk.ReadImage(str(AMOS))
    arr = edit(sitk.GetArrayFromImage(image))
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(image)
    sitk.WriteImage(out, str(root / "amos" / "amos_0013.nii.gz"))
    return str(root)


def _with_unknown_label(a):
    a = a.copy()
    a[0, :4, :4] = 77
    return a


@pytest.mark.parametrize("edit, message", [
    (_with_unknown_label, "label value(s) [77] are not in the source's class map"),
    (lambda a: np.where(a == 10, 0, a), "no pancreas in this label map"),
    (lambda a: a[:, :, ::-1].copy(), "wrong orientation in the header (left-right flipped?)"),
], ids=["unknown-label", "no-pancreas", "left-right-flipped"])
def test_synth_refuses_bad_maps_with_one_line(tmp_path, edit, message):
    maps = _bad_copy(tmp_path, edit)
    r = pdac("synth", "--labelmaps", maps, "-o", str(tmp_path / "out"), "-n", "1", "--split", "val", "--strict")
    assert r.returncode == 3, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert message in last and "Traceback" not in r.stderr
    # without --strict the map is skipped with the same reason, and no subject is left
    r = pdac("synth", "--labelmaps", maps, "-o", str(tmp_path / "out"), "-n", "1", "--split", "val")
    assert r.returncode == 3 and message in r.stderr and "no usable multi-organ label map" in r.stderr.splitlines()[-1]
    assert not (tmp_path / "out" / "truth.json").exists()


def test_real_scan_scoring_is_exact_on_known_masks():
    """`score` against the reference itself (Dice 1, distance 0, contained) and against a copy moved 30 mm."""
    from pdac.lab.real_scans import score

    ref_image = sitk.ReadImage(str(REPO / "tests" / "data" / "real-ct" / "reference"
                                   / "example_seg_fast_force_split__v2_total_fast.nii.gz"))
    reference = np.rint(sitk.GetArrayFromImage(ref_image)) == 7
    exact = score(reference, ref_image, ref_image, reference, ref_image, (0.0, 0.0, 0.0))
    assert exact["dice"] == 1.0 and exact["centroid_distance_mm"] == 0.0 and exact["crop_contains_reference"]
    moved = sitk.Image(ref_image)
    moved.SetOrigin([o + d for o, d in zip(ref_image.GetOrigin(), (0.0, 0.0, 30.0), strict=True)])
    off = score(reference, moved, ref_image, reference, ref_image, (10.0, 10.0, 10.0))
    assert off["centroid_distance_mm"] == pytest.approx(30.0, abs=0.1)
    assert off["dice"] < 0.5 and not off["crop_contains_reference"]
    assert off["reference_ml"] == off["stage1_ml"] == pytest.approx(18.8, abs=0.1)


def test_real_scan_command_prints_the_numbers(tmp_path):
    r = pdac("real-scan", "--json", str(tmp_path / "real.json"))
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [ln for ln in r.stdout.splitlines() if "dice=" in ln]
    assert len(lines) == 2 and all("centroid_distance_mm=" in ln and "crop_contains_reference=" in ln
                                   for ln in lines)
    result = json.loads((tmp_path / "real.json").read_text())
    assert [s["name"].split()[0] for s in result["scans"]] == ["example_ct", "example_ct_dicom"]
    for s in result["scans"]:
        assert 0 <= s["dice"] <= 1 and s["reference_ml"] > 0


def test_real_scan_refuses_a_missing_reference_before_loading_models(tmp_path):
    r = pdac("real-scan", "--scan", str(REPO / "tests" / "data" / "real-ct" / "example_ct.nii.gz"),
             "--reference", str(tmp_path / "none.nii.gz"))
    assert r.returncode == 3 and "no such file or folder" in r.stderr.strip().splitlines()[-1]
    assert "loaded pancreas" not in r.stderr


def test_small_bowel_labels_become_loops_with_fat_between():
    """A small-bowel label outlines a packet of loops: painted as loops (wall, content) with mesenteric fat between,
    not one block of soft tissue, which on a real scan looks like no bowel at all (and like a gland to stage 1)."""
    from pdac.lab.synth.paint import SynthSpec, attenuation
    from pdac.lab.synth.sources import Subject
    from pdac.lab.synth.tissues import Tissue

    tissues = np.full((40, 60, 60), Tissue.VISCERAL_FAT, dtype=np.uint8)
    tissues[5:35, 10:50, 10:50] = Tissue.SMALL_BOWEL
    packet = tissues == Tissue.SMALL_BOWEL
    for seed in range(3):
        subject = Subject("test", "packet", tissues.copy(), np.zeros(3), 2.5)
        image = attenuation(subject, np.random.default_rng(seed), SynthSpec(), {"lesion_present": False})
        fat = (image > -140) & (image < -40)
        assert 0.1 < fat[packet].mean() < 0.8, fat[packet].mean()  # fat between loops, loops still most of it
        assert (image[packet] > -20).mean() > 0.2  # walls and fluid or collapsed loops
        assert 0.0 < (~fat[~packet] & (image[~packet] > -20)).mean() < 0.5  # sparser loops in the other fat


def test_phases_restricts_the_contrast_phases_drawn():
    """`--phases venous pancreatic`: only those, in their default proportions; every volume painted in one of them."""
    from pdac.lab.synth.paint import SynthSpec, attenuation
    from pdac.lab.synth.sources import Subject
    from pdac.lab.synth.tissues import PHASES, IntensitySettings, Tissue, only_phases

    default = IntensitySettings().phase_probability
    kept = only_phases(IntensitySettings(), ("venous", "pancreatic")).phase_probability
    venous, pancreatic = PHASES.index("venous"), PHASES.index("pancreatic")
    assert sum(kept) == pytest.approx(1) and kept[venous] / kept[pancreatic] == pytest.approx(
        default[venous] / default[pancreatic])
    assert all(p == 0 for i, p in enumerate(kept) if i not in (venous, pancreatic))
    spec = SynthSpec(intensities=only_phases(IntensitySettings(), ("non-contrast",)))
    tissues = np.full((8, 16, 16), Tissue.PANCREAS, dtype=np.uint8)
    for seed in range(5):
        truth = {"lesion_present": False}
        attenuation(Subject("test", "gland", tissues.copy(), np.zeros(3), 2.5), np.random.default_rng(seed), spec,
                    truth)
        assert truth["phase"] == "non-contrast"
    with pytest.raises(ValueError, match="unknown phase"):
        only_phases(IntensitySettings(), ("arterial",))


def test_synth_refuses_an_unknown_phase_in_one_line(tmp_path):
    r = pdac("synth", "--labelmaps", str(LABELMAPS), "-o", str(tmp_path / "out"), "-n", "1", "--split", "val",
             "--phases", "venous", "arterial")
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1].endswith(
        "--phases: unknown phase(s) arterial; known: venous, pancreatic, non-contrast, delayed")
    assert not (tmp_path / "out").exists()
