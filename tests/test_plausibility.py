"""Stage-1 plausibility: the phantoms' pancreas passes, an MR-like scan is flagged, and on the real CT the
measurements (volume, median HU, position against the bony pelvis) flag masks placed where no pancreas is."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import REPO

from pdac.config import PlausibilityConfig, load_config
from pdac.infer.geometry import resample_to_spacing
from pdac.infer.plausibility import assess_pancreas, pelvis_top_z_mm

REAL = REPO / "tests" / "data" / "real-ct"


@pytest.fixture(scope="module")
def stage1():
    """The demo weights' stage 1 in-process, then the plausibility check (what Pipeline.run does first)."""
    from pdac.infer.pancreas import segment_pancreas
    from pdac.infer.pipeline import Pipeline, sanitize

    config = load_config()
    pipeline = Pipeline(config)

    def check(scan: sitk.Image, name: str):
        scan = sanitize(scan, name)
        low, mask = segment_pancreas(pipeline.pancreas_model, scan, config.stage1.spacing_mm)
        return assess_pancreas(scan, low, mask, config.plausibility, name)

    return check


def test_the_phantoms_pancreas_is_plausible(stage1, phantom_scans, caplog):
    for orientation, path in phantom_scans.items():
        check = stage1(sitk.ReadImage(str(path), sitk.sitkFloat32), orientation)
        assert check.found and check.plausible, (orientation, check.reasons)
        assert 15 <= check.volume_ml <= 250 and 20 <= check.median_hu <= 200
    assert "implausible" not in caplog.text


def test_a_scan_that_is_not_ct_is_flagged(stage1, phantom_scans, caplog):
    ct = sitk.ReadImage(str(phantom_scans["identity"]), sitk.sitkFloat32)
    mr_like = sitk.Cast((ct + 1024.0) * 0.7, sitk.sitkFloat32)  # no air, no HU: 0 .. ~1200
    check = stage1(mr_like, "mr_like")
    assert check.plausible is False
    assert any("do not look like CT" in reason for reason in check.reasons), check.reasons
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "look like CT" in r.getMessage()]
    assert len(warnings) == 1


@pytest.fixture(scope="module")
def real_scan():
    scan = sitk.ReadImage(str(REAL / "example_ct.nii.gz"), sitk.sitkFloat32)
    return scan, resample_to_spacing(scan, (4.5, 4.5, 9.0), sitk.sitkLinear, -1024.0)


def _box_mask(low: sitk.Image, centre_mm, half_mm) -> np.ndarray:
    """A box-shaped 'pancreas' on the low-resolution grid around a world point."""
    z, y, x = np.indices(low.GetSize()[::-1])
    index = np.stack([x, y, z], axis=-1).astype(float)
    world = np.asarray(low.GetOrigin()) + (index * low.GetSpacing()) @ np.asarray(low.GetDirection()).reshape(3, 3).T
    return np.all(np.abs(world - np.asarray(centre_mm)) <= np.asarray(half_mm), axis=-1)


def test_the_real_scan_shows_its_pelvis_and_the_dicom_slab_and_phantoms_do_not(real_scan, phantom_scans):
    scan, _ = real_scan
    lo = scan.TransformIndexToPhysicalPoint((0, 0, 0))[2]
    hi = scan.TransformIndexToPhysicalPoint((0, 0, scan.GetSize()[2] - 1))[2]
    top = pelvis_top_z_mm(scan)
    # the iliac crests lie in the lower part of this abdomen-pelvis scan, well below its top
    assert top is not None and lo + 0.3 * (hi - lo) < top < lo + 0.7 * (hi - lo)
    slab = sitk.ReadImage(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(REAL / "example_ct_dicom")),
                          sitk.sitkFloat32)
    assert pelvis_top_z_mm(slab) is None  # upper abdomen: ribs, no pelvis
    for path in phantom_scans.values():
        assert pelvis_top_z_mm(sitk.ReadImage(str(path), sitk.sitkFloat32)) is None


@pytest.mark.parametrize(("where", "reason"), [
    ("upper abdomen, soft tissue", None),
    ("pelvis", "in the pelvis"),
    ("subcutaneous fat", "median"),
    ("tiny", "volume"),
])
def test_masks_where_no_pancreas_is_are_flagged_on_the_real_scan(real_scan, where, reason):
    scan, low = real_scan
    cfg = PlausibilityConfig()
    top = pelvis_top_z_mm(scan)
    size = scan.GetSize()
    centre_x, centre_y, _ = scan.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in size])
    upper_z = scan.TransformIndexToPhysicalPoint((0, 0, size[2] - 12))[2]
    if where == "upper abdomen, soft tissue":  # a 60 mL block of liver/bowel tissue above the pelvis
        mask = _box_mask(low, (centre_x - 60, centre_y, upper_z), (25, 20, 20))
    elif where == "pelvis":
        mask = _box_mask(low, (centre_x, centre_y, top - 60), (25, 20, 20))
    elif where == "subcutaneous fat":  # a thin sheet along the anterior body wall
        hu = sitk.GetArrayFromImage(low)
        body_front = np.argmax(hu[:, :, low.GetSize()[0] // 2] > -300, axis=1)  # first body row per slice
        mask = np.zeros(hu.shape, bool)
        for k in range(hu.shape[0] - 6, hu.shape[0] - 2):
            mask[k, body_front[k]:body_front[k] + 2, low.GetSize()[0] // 2 - 8:low.GetSize()[0] // 2 + 8] = True
    else:
        mask = _box_mask(low, (centre_x - 60, centre_y, upper_z), (5, 5, 5))
    check = assess_pancreas(scan, low, mask, cfg, where)
    if reason is None:
        assert check.plausible, check.reasons
    else:
        assert not check.plausible and any(reason in r for r in check.reasons), check.reasons
