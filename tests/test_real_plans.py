"""Drop-in compatibility: model folders built from the official PANORAMA baseline's real plans
(random weights, one fold, no TTA) load and run in our pipeline unchanged."""

import json
import shutil
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from conftest import REPO, assert_valid_detection_map, pdac

BASELINE = REPO / "tests" / "data" / "panorama-baseline"
STAGE1 = BASELINE / "Dataset103_PANORAMA_baseline_Pancreas_Segmentation" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
STAGE2 = (BASELINE / "Dataset104_PANORAMA_baseline_PDAC_Detection"
          / "nnUNetTrainer_Loss_CE_checkpoints__nnUNetPlans__3d_fullres")


def random_model_folder(src: Path, dst: Path, background_bias: float | None = None, seed: int = 0) -> None:
    """An nnU-Net trained-model folder with the source's exact plans.json/dataset.json and a randomly
    initialised checkpoint in nnU-Net's format (trainer name taken from the folder name)."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    torch.manual_seed(seed)
    dst.mkdir(parents=True)
    shutil.copyfile(src / "plans.json", dst / "plans.json")
    shutil.copyfile(src / "dataset.json", dst / "dataset.json")
    pm = PlansManager(json.loads((src / "plans.json").read_text()))
    cm = pm.get_configuration("3d_fullres")
    lm = pm.get_label_manager(json.loads((src / "dataset.json").read_text()))
    net = get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                 cm.network_arch_init_kwargs_req_import, 1, lm.num_segmentation_heads,
                                 allow_init=True, deep_supervision=True)
    if background_bias is not None:  # make the untrained net say "background" everywhere
        with torch.no_grad():
            for layer in net.decoder.seg_layers:
                layer.weight.zero_()
                layer.bias.copy_(torch.tensor([background_bias] + [-background_bias] * (lm.num_segmentation_heads - 1)))
    (dst / "fold_0").mkdir()
    torch.save({"network_weights": net.state_dict(), "trainer_name": src.name.split("__")[0],
                "init_args": {"plans": None, "configuration": "3d_fullres", "fold": 0, "dataset_json": None},
                "inference_allowed_mirroring_axes": (0, 1, 2), "current_epoch": 1000},
               dst / "fold_0" / "checkpoint_final.pth")


def test_baseline_plans_load_and_run_unchanged(tmp_path, phantom_scans):
    weights = tmp_path / "weights"
    random_model_folder(STAGE1, weights / "pancreas", background_bias=10.0)
    random_model_folder(STAGE2, weights / "lesion")
    assert (weights / "pancreas" / "plans.json").read_bytes() == (STAGE1 / "plans.json").read_bytes()
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
