"""Lesion candidates: our bounding-box shortcut gives exactly report_guided_annotation's result."""

import numpy as np
import pytest
from report_guided_annotation import extract_lesion_candidates
from scipy import ndimage

from pdac.config import DetectionConfig
from pdac.infer.candidates import candidates


def _masked_probability(seed: int) -> np.ndarray:
    """Smooth blobs plus noise inside an off-centre box, exactly 0 outside (as after pancreas masking)."""
    rng = np.random.default_rng(seed)
    prob = np.zeros((40, 60, 80), dtype=np.float32)
    inner = ndimage.gaussian_filter(rng.random((18, 30, 34)), 1.5)
    inner = (inner - inner.min()) / (inner.max() - inner.min())
    for _ in range(3):  # a few lesion-like peaks
        z, y, x = rng.integers(3, 15), rng.integers(3, 27), rng.integers(3, 31)
        inner[z - 2:z + 3, y - 2:y + 3, x - 2:x + 3] += rng.uniform(0.5, 1.5)
    prob[5:23, 20:50, 40:74] = inner / inner.max()
    return prob


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_candidates_equal_the_library_on_the_whole_array(seed):
    prob = _masked_probability(seed)
    cfg = DetectionConfig()
    detection, indexed = candidates(prob, cfg)
    expected, _, expected_idx = extract_lesion_candidates(
        prob, threshold="dynamic", num_lesions_to_extract=cfg.num_lesions_to_extract,
        min_voxels_detection=cfg.min_voxels_detection, dynamic_threshold_factor=cfg.dynamic_threshold_factor)
    assert detection.dtype == np.float32 and detection.shape == prob.shape
    np.testing.assert_array_equal(detection, expected.astype(np.float32))
    np.testing.assert_array_equal(indexed, expected_idx)
    assert detection.max() > 0


def test_empty_probability_gives_an_empty_map():
    detection, indexed = candidates(np.zeros((4, 5, 6), dtype=np.float32), DetectionConfig())
    assert not detection.any() and not indexed.any() and detection.shape == (4, 5, 6)
