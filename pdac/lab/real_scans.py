"""Where does stage 1 put the pancreas on a real scan? Dice, centroid distance and crop containment against a
reference mask (TotalSegmentator's predictions on the bundled real scans: used to measure, never to train).

`pdac real-scan` runs it on the two bundled scans (or on a scan and reference of yours) and prints one line
per scan. The stage-1 mask is compared on the reference's grid (nearest-neighbour resampling by physical
position, so flipped axes between the two files do not matter).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from pdac.errors import InputError
from pdac.infer.geometry import crop_region_around_mask, index_to_world_matrix
from pdac.infer.pancreas import segment_pancreas
from pdac.infer.plausibility import assess_pancreas

log = logging.getLogger(__name__)

REAL_CT = Path(__file__).resolve().parents[2] / "tests" / "data" / "real-ct"


@dataclass(frozen=True)
class RealScan:
    name: str
    scan: Path
    reference: Path
    pancreas_value: int  # the reference's pancreas label


BUNDLED = (
    RealScan("example_ct (non-contrast, 3 mm)", REAL_CT / "example_ct.nii.gz",
             REAL_CT / "reference" / "example_seg_fast_force_split__v2_total_fast.nii.gz", 7),
    RealScan("example_ct_dicom (contrast, 20 slices)", REAL_CT / "example_ct_dicom",
             REAL_CT / "reference" / "example_seg_dicom__v2_total.nii.gz", 7),
)


@dataclass
class RealScanResult:
    name: str
    dice: float
    centroid_distance_mm: float | None
    crop_contains_reference: bool
    reference_ml: float
    stage1_ml: float
    plausible: bool
    plausibility_reasons: list[str]


def _centroid_mm(mask: np.ndarray, image: sitk.Image) -> np.ndarray | None:
    idx = np.argwhere(mask)
    if idx.size == 0:
        return None
    a, origin = index_to_world_matrix(image)
    return origin + a @ idx.mean(axis=0)[::-1]


def _points_mm(mask: np.ndarray, image: sitk.Image) -> np.ndarray:
    a, origin = index_to_world_matrix(image)
    return (origin[:, None] + a @ np.argwhere(mask)[:, ::-1].T).T


def measure(pipeline, case: RealScan) -> RealScanResult:
    """Stage 1 of `pipeline` on `case.scan`, scored against the reference pancreas."""
    from pdac.infer.dicom import find_cases

    found = find_cases([case.scan])
    if len(found) != 1:
        raise InputError(f"{case.scan}: expected one scan or DICOM series, found {len(found)}")
    scan = found[0].read()
    cfg = pipeline.config
    low, mask = segment_pancreas(pipeline.pancreas_model, scan, cfg.stage1.spacing_mm)
    check = assess_pancreas(scan, low, mask, cfg.plausibility, case.name)
    try:
        reference_image = sitk.ReadImage(str(case.reference))
    except RuntimeError as e:
        raise InputError(f"{case.reference}: not a readable label map ({str(e).strip().splitlines()[-1]})") from e
    reference = np.rint(sitk.GetArrayFromImage(reference_image)) == case.pancreas_value
    if not reference.any():
        raise InputError(f"{case.reference}: no voxel has the pancreas value {case.pancreas_value}")
    scores = score(mask, low, scan, reference, reference_image, cfg.crop.margins_mm)
    return RealScanResult(case.name, **scores, plausible=check.plausible, plausibility_reasons=list(check.reasons))


def score(mask: np.ndarray, mask_grid: sitk.Image, scan: sitk.Image, reference: np.ndarray,
          reference_grid: sitk.Image, margins_mm) -> dict:
    """Dice on the reference's grid, centroid distance (mm), and whether the stage-2 crop that `mask` gives
    on `scan` holds every reference voxel."""
    mask_image = sitk.GetImageFromArray(mask.astype(np.uint8))
    mask_image.CopyInformation(mask_grid)
    on_ref = sitk.GetArrayFromImage(sitk.Resample(mask_image, reference_grid, sitk.Transform(),
                                                  sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)) > 0
    both = float(reference.sum() + on_ref.sum())
    dice = 2.0 * float((reference & on_ref).sum()) / both if both else 0.0
    c_ref, c_pred = _centroid_mm(reference, reference_grid), _centroid_mm(mask, mask_grid)
    region = crop_region_around_mask(mask, mask_grid, scan, margins_mm)
    contains = False
    if region is not None:
        a, origin = index_to_world_matrix(scan)
        idx = np.linalg.solve(a, (_points_mm(reference, reference_grid) - origin).T).T
        lo, hi = np.asarray(region.start) - 0.5, np.asarray(region.start) + np.asarray(region.size) - 0.5
        contains = bool(np.all((idx >= lo) & (idx <= hi)))
    return {"dice": round(dice, 3),
            "centroid_distance_mm": None if c_ref is None or c_pred is None
            else round(float(np.linalg.norm(c_ref - c_pred)), 1),
            "crop_contains_reference": contains,
            "reference_ml": round(float(reference.sum()) * float(np.prod(reference_grid.GetSpacing())) / 1000, 1),
            "stage1_ml": round(float(mask.sum()) * float(np.prod(mask_grid.GetSpacing())) / 1000, 1)}


def run(weights: str | None = None, cases: tuple[RealScan, ...] = BUNDLED, json_out: Path | None = None) -> list[dict]:
    from pdac.config import load_config
    from pdac.infer.pipeline import Pipeline

    for case in cases:  # before the models load
        for path in (case.scan, case.reference):
            if not path.exists():
                raise InputError(f"{path}: no such file or folder")
    pipeline = Pipeline(load_config(), weights=weights)
    results = [asdict(measure(pipeline, case)) for case in cases]
    for r in results:
        centroid = "n/a" if r["centroid_distance_mm"] is None else f"{r['centroid_distance_mm']:.1f}"
        print(f"{r['name']}: dice={r['dice']:.3f} centroid_distance_mm={centroid} "
              f"crop_contains_reference={str(r['crop_contains_reference']).lower()} "
              f"reference_ml={r['reference_ml']} stage1_ml={r['stage1_ml']} "
              f"plausible={str(r['plausible']).lower()}")
    if json_out is not None:
        json_out.write_text(json.dumps({"weights": str(pipeline.weights_dir), "scans": results}, indent=1) + "\n")
    return results
