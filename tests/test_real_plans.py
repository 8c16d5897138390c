"""Drop-in compatibility: model folders built from the official PANORAMA baseline's real plans
(random weights, one fold, no TTA) load and run in our pipeline unchanged."""

import json

import numpy as np
import SimpleITK as sitk
from conftest import REPO, assert_valid_detection_map, pdac

from pdac.infer.provenance import write_model_card
from pdac.lab.bench import random_model_folder

BASELINE = REPO / "pdac" / "lab" / "data" / "panorama-baseline"
STAGE1 = BASELINE / "Dataset103_PANORAMA_baseline_Pancreas_Segmentation" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
STAGE2 = (BASELINE / "Dataset104_PANORAMA_baseline_PDAC_Detection"
          / "nnUNetTrainer_Loss_CE_checkpoints__nnUNetPlans__3d_fullres")


def test_baseline_plans_load_and_run_unchanged(tmp_path, phantom_scans):
    weights = tmp_path / "weights"
    random_model_folder(STAGE1, weights / "pancreas", background_bias=10.0)
    random_model_folder(STAGE2, weights / "lesion")
    assert (weights / "pancreas" / "plans.json").read_bytes() == (STAGE1 / "plans.json").read_bytes()
    write_model_card(weights, {"name": "baseline-plans-random", "version": "0", "synthetic": True,
                               "trained_on": "nothing: random weights", "intended_use": "compatibility test",
                               "heldout_metrics": {"data": "none (random weights)", "patient_auroc": 0.5},
                               "license": "Apache-2.0"})
    r = pdac("weights-manifest", str(weights))
    assert r.returncode == 0, r.stderr
    scan_path = phantom_scans["oblique"]
    out = tmp_path / "out"
    # stage 1 finds nothing (by construction), so the documented fallback box is used; keep it small
    r = pdac("detect", str(scan_path), "-o", str(out), "--weights", str(weights), "--no-tta", "--folds", "0",
             "--set", "crop.fallback_extent_mm=[60,60,30]", "--device", "cpu", timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "no pancreas found" in r.stderr
    assert "PlainConvUNet" in r.stderr  # the real baseline architecture was built from its plans
    scan = sitk.ReadImage(str(scan_path))
    det = sitk.ReadImage(str(out / "case_oblique_detection_map.mha"))
    arr = assert_valid_detection_map(det, scan)
    likelihood = json.loads((out / "pdac-likelihood.json").read_text())["case_oblique"]
    assert likelihood == float(arr.max())
    lesions = json.loads((out / "case_oblique_lesions.json").read_text())
    assert lesions["pancreas_found"] is False
    assert np.prod(lesions["crop_index_xyz"]["size"]) < np.prod(scan.GetSize())
