"""Post-processing: lesion probability -> lesion candidates (one constant value each) and their list."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from pdac.config import DetectionConfig
from pdac.infer.geometry import index_to_world_matrix

with contextlib.redirect_stdout(io.StringIO()):  # its import prints a citation banner on every run
    from report_guided_annotation import extract_lesion_candidates


@dataclass(frozen=True)
class Lesion:
    likelihood: float
    centroid_world_mm: list[float]
    volume_mm3: float
    bbox_index_xyz: list[list[int]]  # [[x0, y0, z0], [x1, y1, z1]] inclusive, in the full scan
    voxels: int


def candidates(probability: np.ndarray, cfg: DetectionConfig) -> tuple[np.ndarray, np.ndarray]:
    """(detection map, indexed candidates) from a probability map with report_guided_annotation's
    dynamic threshold (peak / factor). Every candidate is constant, as picai_eval requires."""
    from scipy import ndimage

    detection = np.zeros(probability.shape, dtype=np.float32)
    indexed = np.zeros(probability.shape, dtype=np.int32)
    positive = probability > 0
    if not positive.any():
        return detection, indexed
    # Only the bounding box of the positive voxels (after pancreas masking, a small part of the crop):
    # candidates are thresholded at peak / factor > 0, so nothing outside it can change the result, and
    # the extraction's cost grows with the array size times the number of thresholded components.
    box = ndimage.find_objects(positive.astype(np.int8))[0]
    det_box, _, idx_box = extract_lesion_candidates(
        probability[box].astype(np.float32),
        threshold="dynamic",
        num_lesions_to_extract=cfg.num_lesions_to_extract,
        min_voxels_detection=cfg.min_voxels_detection,
        dynamic_threshold_factor=cfg.dynamic_threshold_factor,
    )
    detection[box] = det_box
    indexed[box] = idx_box
    return detection, indexed


def lesion_labels(detection: np.ndarray) -> np.ndarray:
    """The candidates of a detection map as an int32 label volume: label i is the i-th entry of `lesion_list`
    (most likely first; a candidate = a 26-connected region of non-zero voxels)."""
    from scipy import ndimage

    labels, n = ndimage.label(detection > 0, structure=np.ones((3, 3, 3)))
    if n == 0:
        return labels.astype(np.int32)
    peaks = ndimage.maximum(detection, labels, index=np.arange(1, n + 1))
    order = sorted(range(n), key=lambda i: -round(float(peaks[i]), 6))  # stable: ties keep scan order
    relabel = np.zeros(n + 1, dtype=np.int32)
    relabel[np.asarray(order) + 1] = np.arange(1, n + 1, dtype=np.int32)
    return relabel[labels]


def lesion_list(detection: np.ndarray, grid: sitk.Image, offset_xyz=(0, 0, 0)) -> list[Lesion]:
    """One entry per candidate of a detection map on `grid`, most likely first (the order of `lesion_labels`).
    `offset_xyz` is the grid's index offset in the full scan (a crop's region start), for the bounding boxes."""
    from scipy import ndimage

    a, origin = index_to_world_matrix(grid)
    voxel_mm3 = float(np.prod(grid.GetSpacing()))
    labels = lesion_labels(detection)
    out = []
    for i, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        region = labels[sl] == i
        idx_zyx = np.argwhere(region) + [s.start for s in sl]
        centroid_xyz = idx_zyx.mean(axis=0)[::-1]
        start = [int(s.start) + int(o) for s, o in zip(sl[::-1], offset_xyz, strict=True)]
        stop = [int(s.stop) - 1 + int(o) for s, o in zip(sl[::-1], offset_xyz, strict=True)]
        out.append(Lesion(
            likelihood=round(float(detection[sl][region].max()), 6),
            centroid_world_mm=[round(float(v), 2) for v in origin + a @ centroid_xyz],
            volume_mm3=round(float(region.sum()) * voxel_mm3, 1),
            bbox_index_xyz=[start, stop],
            voxels=int(region.sum()),
        ))
    return out
