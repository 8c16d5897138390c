"""Stage 2: lesion probability from the high-resolution model on the pancreas crop."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from pdac.config import DetectionConfig
from pdac.infer.geometry import resample_like
from pdac.infer.models import Model, predict_probabilities


def lesion_probability(model: Model, crop: sitk.Image, lesion_channel: int = 1) -> np.ndarray:
    """Probability of the lesion class on the crop's grid ((z, y, x) float32)."""
    return predict_probabilities(model, crop, [lesion_channel])


def dilated_pancreas_on(crop: sitk.Image, low_grid: sitk.Image, low_mask: np.ndarray, dilation_mm: float) -> np.ndarray:
    """The stage-1 pancreas, dilated by `dilation_mm`, resampled onto the crop's grid (bool (z, y, x))."""
    mask = sitk.GetImageFromArray(low_mask.astype(np.uint8))
    mask.CopyInformation(low_grid)
    radius = [int(np.ceil(dilation_mm / s)) for s in low_grid.GetSpacing()]
    if dilation_mm > 0:
        mask = sitk.BinaryDilate(mask, radius, sitk.sitkBall)
    return sitk.GetArrayFromImage(resample_like(mask, crop, sitk.sitkNearestNeighbor)).astype(bool)


def mask_probability(probability: np.ndarray, crop: sitk.Image, low_grid: sitk.Image, low_mask: np.ndarray | None,
                     cfg: DetectionConfig) -> np.ndarray:
    """Lesion probability kept only on tissue (not air or gas) and, with a stage-1 pancreas (`low_mask` not
    None), within it dilated by `cfg.pancreas_dilation_mm`. In place; returns `probability`."""
    probability *= sitk.GetArrayViewFromImage(crop) >= cfg.min_tissue_hu
    if cfg.mask_to_pancreas and low_mask is not None:
        probability *= dilated_pancreas_on(crop, low_grid, low_mask, cfg.pancreas_dilation_mm)
    return probability
