"""A real CT (tests/data/real-ct, TotalSegmentator's Apache-2.0 test scan) through `pdac detect` and process.py
with the synthetic demo weights: valid outputs on the scan's grid, time and memory in the log, one warning that
the weights are synthetic, the pelvic "pancreas" flagged as implausible, and overlays displayed the way
radiologists read CT (checked with markers at known physical positions)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import REPO, WEIGHTS, assert_valid_detection_map, pdac, process, write_phantom
from PIL import Image
from scipy import ndimage

from pdac.infer.overlay import BANNER_COLOUR, save_detection_overlay

REAL = REPO / "tests" / "data" / "real-ct"
REAL_NIFTI = REAL / "example_ct.nii.gz"
SYNTHETIC_LINE = "results are not meaningful on patient scans"
MAGENTA = tuple(int(BANNER_COLOUR[i:i + 2], 16) for i in (1, 3, 5))


def warning_lines(stderr: str, fragment: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if " WARNING " in ln and fragment in ln]


def banner_pixels(png) -> int:
    rgb = np.asarray(Image.open(png).convert("RGB"))
    return int(np.all(rgb == MAGENTA, axis=-1).sum())


@pytest.fixture(scope="module")
def real_detect(tmp_path_factory):
    out = tmp_path_factory.mktemp("real-detect")
    r = pdac("detect", str(REAL_NIFTI), "-o", str(out), "--overlays")
    return r, out


def test_real_scan_outputs_are_valid_on_the_scans_grid_with_time_and_memory_logged(real_detect):
    r, out = real_detect
    assert r.returncode == 0, r.stderr[-3000:]
    scan = sitk.ReadImage(str(REAL_NIFTI))
    det = sitk.ReadImage(str(out / "example_ct_detection_map.mha"))
    arr = assert_valid_detection_map(det, scan)
    likelihoods = json.loads((out / "pdac-likelihood.json").read_text())
    assert likelihoods == {"example_ct": pytest.approx(float(arr.max()), abs=1e-6)}
    line = next(ln for ln in r.stderr.splitlines() if "example_ct: likelihood" in ln)
    assert " s (stage1 " in line and "peak memory" in line and " GB" in line


def test_real_scan_says_synthetic_once_and_flags_the_pelvic_pancreas(real_detect):
    r, out = real_detect
    assert len(warning_lines(r.stderr, SYNTHETIC_LINE)) == 1, r.stderr[-3000:]
    lesions = json.loads((out / "example_ct_lesions.json").read_text())
    pancreas = lesions["pancreas"]
    assert pancreas["plausible"] is False
    assert any("pelvis" in reason for reason in pancreas["reasons"]), pancreas
    # the flagged mask lies below the detected top of the bony pelvis
    assert pancreas["centroid_world_mm"][2] < pancreas["pelvis_top_z_mm"]
    assert pancreas["volume_ml"] > 0 and isinstance(pancreas["median_hu"], float)
    assert len(warning_lines(r.stderr, "implausible stage-1 pancreas")) == 1


def test_real_scan_lesion_list_carries_the_provenance(real_detect):
    _, out = real_detect
    provenance = json.loads((out / "example_ct_lesions.json").read_text())["provenance"]
    card = json.loads((WEIGHTS / "model.json").read_text())
    assert provenance["model"] == {"name": card["name"], "version": card["version"], "synthetic": True}
    assert provenance["manifest_sha256"] == hashlib.sha256((WEIGHTS / "manifest.json").read_bytes()).hexdigest()
    assert provenance["pdac_version"] == "0.1.0"
    canonical = json.dumps(provenance["config"], sort_keys=True, separators=(",", ":"))
    assert provenance["config_sha256"] == hashlib.sha256(canonical.encode()).hexdigest()
    assert provenance["config"]["plausibility"]["action"] == "warn"


def test_real_scan_overlay_carries_the_synthetic_label(real_detect):
    _, out = real_detect
    assert banner_pixels(out / "example_ct_overlay.png") > 2000


def test_process_on_the_real_scan_as_mha_with_the_fallback_action(tmp_path):
    """process.py (GC): the real scan as .mha; `plausibility.action = "fallback"` drops the pelvic pancreas."""
    scan = sitk.ReadImage(str(REAL_NIFTI))
    gc_in = tmp_path / "in" / "images" / "venous-ct"
    gc_in.mkdir(parents=True)
    sitk.WriteImage(scan, str(gc_in / "real.mha"))
    config = tmp_path / "fallback.toml"
    config.write_text('[plausibility]\naction = "fallback"\n')
    r = process(tmp_path / "in", tmp_path / "out", env={"PDAC_CONFIG": str(config)})
    assert r.returncode == 0, r.stderr[-3000:]
    det = sitk.ReadImage(str(tmp_path / "out" / "images" / "pdac-detection-map" / "detection_map.mha"))
    arr = assert_valid_detection_map(det, scan)
    likelihood = json.loads((tmp_path / "out" / "pdac-likelihood.json").read_text())
    assert isinstance(likelihood, float) and likelihood == pytest.approx(float(arr.max()), abs=1e-6)
    assert len(warning_lines(r.stderr, SYNTHETIC_LINE)) == 1
    assert "treated as not found" in r.stderr and "no pancreas found" in r.stderr
    line = next(ln for ln in r.stderr.splitlines() if "PDAC likelihood" in ln)
    assert " s, peak memory " in line


# ----------------------------------------------------------------------------------------------------------
# Radiological display: a marker at a known physical position must land where a radiologist expects it.
# ----------------------------------------------------------------------------------------------------------

def _panels(png) -> list[tuple[slice, slice]]:
    """Pixel boxes of the two image panels (axial, coronal): the two largest non-white regions, left to right."""
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    labels, n = ndimage.label(np.any(rgb < 245, axis=-1))
    sizes = ndimage.sum_labels(np.ones(labels.shape), labels, index=np.arange(1, n + 1))
    boxes = ndimage.find_objects(labels)
    two = sorted((boxes[i] for i in np.argsort(sizes)[-2:]), key=lambda b: b[1].start)
    return two


def _position(png, box, which: str) -> tuple[float, float]:
    """Centre of the overlay colour (red-yellow) or of the white CT marker within a panel, as fractions
    (column, row) of the panel."""
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)[box]
    found = (rgb[..., 0] - rgb[..., 2]) > 60 if which == "overlay" else np.all(rgb >= 250, axis=-1)
    assert found.sum() > 5, f"{which} marker not visible"
    rows, cols = np.nonzero(found)
    return cols.mean() / found.shape[1], rows.mean() / found.shape[0]


def _world_extent(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    size = np.asarray(image.GetSize())
    corners = np.array([image.TransformContinuousIndexToPhysicalPoint([float(v) for v in np.multiply(c, size - 1)])
                        for c in np.ndindex(2, 2, 2)])
    return corners.min(axis=0), corners.max(axis=0)


def _ball(image: sitk.Image, world_mm: np.ndarray, radius_mm: float = 15.0) -> np.ndarray:
    """Boolean (z, y, x) array on `image`'s grid: the voxels within `radius_mm` of a world point."""
    z, y, x = np.indices(image.GetSize()[::-1])
    index = np.stack([x, y, z], axis=-1).reshape(-1, 3).astype(float)
    origin, spacing = np.asarray(image.GetOrigin()), np.asarray(image.GetSpacing())
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    world = origin + (index * spacing) @ direction.T
    return (np.linalg.norm(world - world_mm, axis=1) <= radius_mm).reshape(x.shape)


def _grid(which: str, tmp_path) -> sitk.Image:
    if which == "real":
        return sitk.ReadImage(str(REAL_NIFTI), sitk.sitkFloat32)
    image, _ = write_phantom(tmp_path / f"{which}.mha", seed=21, orientation=which)
    return image


@pytest.mark.parametrize("which", ["real", "flipped", "identity", "oblique"])
def test_overlay_is_radiological(tmp_path, which):
    """Axial: anterior up, patient's right on the image's left. Coronal: head up, patient's right on the left.
    On the grids of the real scan (direction diag(-1, -1, 1)) and of phantoms with reversed, identity and oblique
    axes: a detection marker at the patient's right-anterior-head side and a white CT marker at the
    left-anterior-head side (same axial and coronal planes) must both land where a radiologist expects them."""
    grid = _grid(which, tmp_path)
    lo, hi = _world_extent(grid)
    # LPS world: patient right = -x (left = +x), anterior = -y, head = +z
    detection = _ball(grid, lo + (hi - lo) * np.array([0.25, 0.25, 0.75]))
    ct = np.where(_ball(grid, lo + (hi - lo) * np.array([0.75, 0.25, 0.75])), 1000.0, -1000.0).astype(np.float32)
    scan, marker = sitk.GetImageFromArray(ct), sitk.GetImageFromArray(detection.astype(np.float32))
    scan.CopyInformation(grid)
    marker.CopyInformation(grid)
    png = tmp_path / "overlay.png"
    save_detection_overlay(scan, marker, png, "orientation check")
    for view, box in zip(("axial", "coronal"), _panels(png), strict=True):
        col, row = _position(png, box, "overlay")
        assert col < 0.4, f"{view}: patient's right should be on the image's left (column at {col:.2f})"
        assert row < 0.4, f"{view}: {'anterior' if view == 'axial' else 'the head'} should be up (row at {row:.2f})"
        col, row = _position(png, box, "ct")
        assert col > 0.6 and row < 0.4, f"{view}: the CT does not match the overlay (CT marker at {col:.2f}, {row:.2f})"


def test_cli_overlay_of_the_real_scan_shows_the_top_lesion_where_it_is(real_detect):
    """The CLI's own PNG: the top lesion's world centroid predicts where its colour appears in both views."""
    _, out = real_detect
    lesion = json.loads((out / "example_ct_lesions.json").read_text())["lesions"][0]
    lo, hi = _world_extent(sitk.ReadImage(str(REAL_NIFTI)))
    u = (np.asarray(lesion["centroid_world_mm"]) - lo) / (hi - lo)  # LPS fractions of the scan's extent
    png = out / "example_ct_overlay.png"
    axial, coronal = _panels(png)
    col, row = _position(png, axial, "overlay")
    assert col == pytest.approx(u[0], abs=0.08) and row == pytest.approx(u[1], abs=0.08)
    col, row = _position(png, coronal, "overlay")
    assert col == pytest.approx(u[0], abs=0.08) and row == pytest.approx(1 - u[2], abs=0.08)
