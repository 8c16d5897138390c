"""The optimised pipeline stays within tolerance of the unoptimised, baseline-style path (two
`nnUNetv2_predict_from_modelfolder` subprocesses, NIfTI files, all 7 probability channels resampled
by nnU-Net and saved as .npz), on the same scan with the demo weights."""

import numpy as np
import SimpleITK as sitk
from conftest import WEIGHTS

from pdac.config import load_config
from pdac.infer.io import read_image
from pdac.infer.pipeline import Pipeline
from pdac.lab.bench import baseline_style_map


def test_pipeline_matches_the_baseline_style_reference(phantom_scans):
    scan_path = phantom_scans["identity"]  # a phantom with a PDAC
    overrides = {"stage2": {"tta": False}}
    ours = Pipeline(load_config(overrides=overrides), str(WEIGHTS)).run(read_image(scan_path), "case")
    reference = baseline_style_map(scan_path, WEIGHTS, overrides)
    ours_map = sitk.GetArrayFromImage(ours.detection_map)
    ref_map = sitk.GetArrayFromImage(reference)
    assert ours_map.shape == ref_map.shape
    assert ref_map.max() > 0.5, "the reference should detect this phantom's lesion"
    assert abs(float(ours_map.max()) - float(ref_map.max())) <= 0.02
    a, b = ours_map > 0, ref_map > 0
    dice = 2 * np.count_nonzero(a & b) / (a.sum() + b.sum())
    assert dice >= 0.9, dice
