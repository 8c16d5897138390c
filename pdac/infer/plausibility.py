"""Stage-1 plausibility: is what stage 1 calls the pancreas anatomically possible?

Stage 1 always returns *something* on a scan it was not trained for (the synthetic demo weights put the
"pancreas" in the pelvis of a real CT). Volume, median HU under the mask and the position relative to the bony
pelvis are measured after stage 1; what lies outside `[plausibility]` of resources/pipeline.toml (with sources
of the numbers there) is reported and, with `action = "fallback"`, treated as not found. A scan whose
intensities do not look like CT in HU (MR, normalised data) is flagged the same way.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from pdac.config import PlausibilityConfig
from pdac.infer.geometry import copy_geometry, crop, crop_region_around_mask, resample_like

log = logging.getLogger(__name__)

# Bony-pelvis finder, on a 3 mm grid aligned with the patient axes (LPS). A hip bone is bone (>= 200 HU) inside
# the body, more than 60 mm lateral to the body's midline, of at least 50 mL, reaching the body's caudal end.
# Ribs (a few mL each) and the spine (on the midline) do not qualify. The pelvis must be found on both sides,
# and its top must lie at least 50 mm below the top of the body in the scan (arms beside the body that span the
# whole scan are not a pelvis); otherwise the position is not assessed.
GRID_MM = 3.0
BODY_HU = -300.0
BONE_HU = 200.0
LATERAL_MM = 60.0
MIN_HIP_BONE_ML = 50.0
MIN_ABOVE_PELVIS_MM = 50.0
AIR_PERCENTILE = 0.1


@dataclass
class PancreasCheck:
    """What stage 1 segmented, measured; `record()` goes into the lesion list as `pancreas`."""

    found: bool
    volume_ml: float
    median_hu: float | None
    plausible: bool
    reasons: list[str] = field(default_factory=list)
    centroid_world_mm: list[float] | None = None
    pelvis_top_z_mm: float | None = None  # LPS z (superior positive) of the iliac crests, if the scan shows them
    cut_by_scan_edge: bool = False  # the mask touches the scan's border: no lower volume limit

    def record(self) -> dict:
        return dataclasses.asdict(self)


def not_ct_reason(scan: sitk.Image, cfg: PlausibilityConfig) -> str | None:
    """Why the scan does not look like CT in HU, or None. Sampled on every 2nd voxel per axis (fast)."""
    sample = sitk.GetArrayViewFromImage(scan)[::2, ::2, ::2]
    darkest = float(np.percentile(sample, AIR_PERCENTILE))
    if darkest > cfg.ct_air_max_hu:
        return (f"intensities do not look like CT in HU (no air: darkest {AIR_PERCENTILE:g}% of voxels at "
                f"{darkest:.0f}, expected below {cfg.ct_air_max_hu:.0f}; an MR or normalised scan?)")
    return None


def median_hu_under_mask(scan: sitk.Image, mask: np.ndarray, mask_grid: sitk.Image) -> float | None:
    """Median of the scan's own voxels under the (low-resolution) mask, on the mask's bounding box only."""
    region = crop_region_around_mask(mask, mask_grid, scan, (0.0, 0.0, 0.0))
    if region is None:
        return None
    roi = crop(scan, region)
    mask_image = copy_geometry(mask.astype(np.uint8), mask_grid)
    inside = sitk.GetArrayViewFromImage(resample_like(mask_image, roi, sitk.sitkNearestNeighbor)) > 0
    if not inside.any():
        return None
    return float(np.median(sitk.GetArrayViewFromImage(roi)[inside]))


def _patient_aligned(scan: sitk.Image) -> sitk.Image:
    """The scan on a GRID_MM grid with identity direction (array axes z, y, x = S, P, L increasing)."""
    size = np.asarray(scan.GetSize())
    corners = np.array([scan.TransformContinuousIndexToPhysicalPoint([float(v) for v in np.multiply(c, size - 1)])
                        for c in np.ndindex(2, 2, 2)])
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    reference = sitk.Image([int(v) for v in np.floor((hi - lo) / GRID_MM) + 1], sitk.sitkFloat32)
    reference.SetOrigin(lo.tolist())
    reference.SetSpacing([GRID_MM] * 3)
    return sitk.Resample(scan, reference, sitk.Transform(), sitk.sitkLinear, -1024.0, sitk.sitkFloat32)


def pelvis_top_z_mm(scan: sitk.Image) -> float | None:
    """LPS z (mm) of the top of the bony pelvis, or None when the scan does not clearly show one."""
    grid = _patient_aligned(scan)
    hu = sitk.GetArrayViewFromImage(grid)
    body = ndimage.binary_opening(hu > BODY_HU)
    labels, n = ndimage.label(body)
    if n == 0:
        return None
    body = labels == int(np.argmax(np.bincount(labels.ravel())[1:]) + 1)
    body = np.stack([ndimage.binary_fill_holes(s) for s in body])
    slices = np.flatnonzero(body.any(axis=(1, 2)))
    x_mm = np.arange(hu.shape[2]) * GRID_MM
    area = body.sum(axis=(1, 2))
    midline = (body.sum(axis=1) @ x_mm) / np.maximum(area, 1)  # per axial slice
    lateral = x_mm[None, None, :] - midline[:, None, None]
    bone = body & (hu >= BONE_HU)
    voxel_ml = GRID_MM**3 / 1000.0
    tops = []
    for side in (lateral < -LATERAL_MM, lateral > LATERAL_MM):  # patient right, patient left
        labels, n = ndimage.label(bone & side)
        if n == 0:
            return None
        sizes = np.bincount(labels.ravel())[1:] * voxel_ml
        side_top = None
        for index in np.flatnonzero(sizes >= MIN_HIP_BONE_ML) + 1:
            z = np.flatnonzero((labels == index).any(axis=(1, 2)))
            if z.min() <= slices.min() + 1:  # reaches the caudal end of the body in the scan
                side_top = z.max() if side_top is None else max(side_top, z.max())
        if side_top is None:
            return None
        tops.append(side_top)
    top = min(tops)
    if (slices.max() - top) * GRID_MM < MIN_ABOVE_PELVIS_MM:
        return None
    return float(grid.GetOrigin()[2] + top * GRID_MM)


def assess_pancreas(scan: sitk.Image, low_grid: sitk.Image, mask: np.ndarray, cfg: PlausibilityConfig,
                    name: str = "scan") -> PancreasCheck:
    """Measure the stage-1 mask (on `low_grid`) against the configured ranges; log one WARNING if implausible."""
    reasons = []
    not_ct = not_ct_reason(scan, cfg)
    if not_ct:
        reasons.append(not_ct)
    found = bool(mask.any())
    if not found:
        check = PancreasCheck(found=False, volume_ml=0.0, median_hu=None, plausible=False,
                              reasons=["stage 1 found no pancreas", *reasons])
        if not_ct:
            log.warning("%s: %s", name, not_ct)
        return check
    volume_ml = float(mask.sum() * np.prod(low_grid.GetSpacing()) / 1000.0)
    median_hu = median_hu_under_mask(scan, mask, low_grid)
    centroid = list(low_grid.TransformContinuousIndexToPhysicalPoint(np.argwhere(mask).mean(axis=0)[::-1].tolist()))
    # A mask cut by the scan's edge (a scan that covers part of the pancreas) is small for a good reason.
    truncated = any(np.take(mask, i, axis=a).any() for a in range(3) for i in (0, -1))
    if volume_ml > cfg.max_volume_ml or (volume_ml < cfg.min_volume_ml and not truncated):
        reasons.append(f"volume {volume_ml:.1f} mL outside {cfg.min_volume_ml:g}-{cfg.max_volume_ml:g} mL")
    if median_hu is not None and not cfg.min_median_hu <= median_hu <= cfg.max_median_hu:
        reasons.append(f"median {median_hu:.0f} HU outside {cfg.min_median_hu:g}-{cfg.max_median_hu:g} HU")
    pelvis_top = pelvis_top_z_mm(scan) if cfg.check_pelvis else None
    if pelvis_top is not None and centroid[2] < pelvis_top:
        reasons.append(f"in the pelvis: centred {pelvis_top - centroid[2]:.0f} mm below the top of the iliac crests")
    check = PancreasCheck(found=True, volume_ml=round(volume_ml, 2),
                          median_hu=None if median_hu is None else round(median_hu, 1), plausible=not reasons,
                          reasons=reasons, centroid_world_mm=[round(float(v), 2) for v in centroid],
                          pelvis_top_z_mm=None if pelvis_top is None else round(pelvis_top, 1),
                          cut_by_scan_edge=bool(truncated))
    if reasons:
        consequence = ("treated as not found (plausibility.action = fallback)" if cfg.action == "fallback"
                       else "the lesion results are probably meaningless")
        log.warning("%s: implausible stage-1 pancreas (%s); %s", name, "; ".join(reasons), consequence)
    return check


def pancreas_note(record: dict) -> str:
    """A few words for an overlay's title when the stage-1 pancreas is missing or implausible."""
    if not record or record.get("plausible", True):
        return ""
    return " (stage-1 pancreas implausible)" if record.get("found") else " (no pancreas found)"
