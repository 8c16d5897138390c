"""Synthetic phantoms: determinism, PANORAMA label semantics, physical-space anatomy, the CLI."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import pdac

from pdac.lab.phantom import PhantomSpec, make_phantom


def _world_centroid(label: sitk.Image, value: int) -> np.ndarray:
    idx = np.argwhere(sitk.GetArrayFromImage(label) == value)[:, ::-1].astype(float)
    a = np.asarray(label.GetDirection()).reshape(3, 3) * np.asarray(label.GetSpacing())
    return (np.asarray(label.GetOrigin()) + idx @ a.T).mean(axis=0)


def test_same_seed_same_phantom_and_different_seed_differs():
    a_img, a_lab, a_truth = make_phantom(np.random.SeedSequence([5, 0]))
    b_img, b_lab, b_truth = make_phantom(np.random.SeedSequence([5, 0]))
    c_img, _, _ = make_phantom(np.random.SeedSequence([6, 0]))
    assert np.array_equal(sitk.GetArrayFromImage(a_img), sitk.GetArrayFromImage(b_img))
    assert np.array_equal(sitk.GetArrayFromImage(a_lab), sitk.GetArrayFromImage(b_lab))
    assert a_truth == b_truth
    assert a_img.GetSize() != c_img.GetSize() or not np.array_equal(
        sitk.GetArrayFromImage(a_img), sitk.GetArrayFromImage(c_img))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_label_semantics_and_intensities(seed):
    image, label, truth = make_phantom(np.random.SeedSequence([seed, 0]), PhantomSpec(lesion=True))
    ct, lab = sitk.GetArrayFromImage(image).astype(float), sitk.GetArrayFromImage(label)
    assert set(np.unique(lab)) <= set(range(7))
    for value in (2, 3, 4, 6):  # veins, arteries, pancreas, common bile duct
        assert np.any(lab == value), f"label {value} missing"
    assert truth.lesion_present and np.any(lab == 1)
    assert 10 <= truth.lesion_diameter_mm <= 40
    # hypoattenuating mass: darker than the parenchyma by roughly the drawn contrast
    core = (lab == 1)
    contrast = np.median(ct[lab == 4]) - np.median(ct[core])
    assert 8 < contrast < 80
    # the lesion lies in or at the pancreas: its centroid is within 25 mm of pancreas voxels
    pancreas_c, lesion_c = _world_centroid(label, 4), _world_centroid(label, 1)
    assert np.linalg.norm(pancreas_c - lesion_c) < 120
    # contrast-enhanced vessels are brighter than the parenchyma; air outside the body
    assert np.median(ct[lab == 3]) > np.median(ct[lab == 4])
    assert ct[0, 0, 0] < -800


def test_negative_phantom_has_no_pdac_label():
    _, label, truth = make_phantom(np.random.SeedSequence([4, 0]), PhantomSpec(lesion=False))
    assert not truth.lesion_present and not np.any(sitk.GetArrayFromImage(label) == 1)


def test_anatomy_is_the_same_in_physical_space_whatever_the_direction():
    """Same seed, different grid orientation: the pancreas sits at the same world position."""
    centroids = {}
    for orientation in ("identity", "flipped", "oblique"):
        _, label, truth = make_phantom(np.random.SeedSequence([9, 0]), PhantomSpec(orientation=orientation))
        centroids[orientation] = _world_centroid(label, 4)
        direction = np.asarray(truth.direction).reshape(3, 3)
        if orientation == "flipped":
            assert np.any(np.diag(direction) < 0)
        if orientation == "oblique":
            assert np.abs(direction - np.diag(np.diag(direction))).max() > 0.05
    spacing = max(truth.spacing)
    for orientation in ("flipped", "oblique"):
        assert np.linalg.norm(centroids[orientation] - centroids["identity"]) < spacing


def test_phantom_cli_writes_panorama_layout_truth_and_previews(tmp_path):
    r = pdac("phantom", "-o", str(tmp_path), "-n", "4", "--seed", "3", "--positive-fraction", "0.5", "--previews", "1")
    assert r.returncode == 0, r.stderr
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert truth["synthetic"] is True and len(truth["cases"]) == 4
    assert sum(c["lesion_present"] for c in truth["cases"]) == 2
    for case in truth["cases"]:
        assert (tmp_path / "imagesTr" / f"{case['case']}_0000.nii.gz").is_file()
        lab = sitk.ReadImage(str(tmp_path / "labelsTr" / f"{case['case']}.nii.gz"))
        assert np.any(sitk.GetArrayFromImage(lab) == 1) == case["lesion_present"]
        assert list(lab.GetSize()) == case["size"]
    assert len(list((tmp_path / "previews").glob("*.png"))) == 1
