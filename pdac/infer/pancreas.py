"""Stage 1: pancreas segmentation at low resolution (4.5 x 4.5 x 9 mm)."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from pdac.infer.geometry import resample_to_spacing
from pdac.infer.models import Model, predict_probabilities


def segment_pancreas(model: Model, scan: sitk.Image, spacing_mm) -> tuple[sitk.Image, np.ndarray]:
    """(low-resolution scan, pancreas mask on its grid). The mask keeps the largest connected
    component only, so a stray false-positive blob cannot stretch the crop."""
    low = resample_to_spacing(scan, spacing_mm, sitk.sitkLinear, default_value=-1024.0)
    foreground = list(model.predictor.label_manager.foreground_labels)
    mask = predict_probabilities(model, low, foreground) >= 0.5
    labels, n = ndimage.label(mask)
    if n > 1:
        sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, n + 1))
        mask = labels == (int(np.argmax(sizes)) + 1)
    return low, mask
