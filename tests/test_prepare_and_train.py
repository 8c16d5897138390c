"""`pdac prepare` on phantoms (flipped and oblique included), nnU-Net planning, and a CPU training
smoke run of every custom trainer through nnU-Net's training machinery with nnUNet_extTrainer."""

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import pdac

TRAINERS = ["nnUNetTrainerTverskyLoss", "nnUNetTrainerTverskyLossFNHeavy", "nnUNetTrainerTverskyCELoss",
            "nnUNetTrainerFocalTverskyLoss", "nnUNetTrainerTverskyCELoss_Adam1en3",
            "nnUNetTrainerTverskyLossSymmetric_Adam1en3"]


@pytest.fixture(scope="module")
def nnunet_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("nnunet")
    env = {"nnUNet_raw": str(root / "raw"), "nnUNet_preprocessed": str(root / "pre"),
           "nnUNet_results": str(root / "results"), "nnUNet_n_proc_DA": "1", "nnUNet_compile": "false",
           "nnUNet_def_n_proc": "1"}
    phantoms = root / "phantoms"
    r = pdac("phantom", "-o", str(phantoms), "-n", "6", "--seed", "21", "--previews", "0", env=env)
    assert r.returncode == 0, r.stderr
    # make two of them flipped and oblique (same anatomy, other grids) by re-drawing with an orientation
    from pdac.lab.phantom import PhantomSpec, make_phantom

    for i, orientation in ((0, "flipped"), (1, "oblique")):
        case = f"ph21_{i:05d}"
        img, lab, _ = make_phantom(np.random.SeedSequence([21, i]), PhantomSpec(orientation=orientation))
        sitk.WriteImage(img, str(phantoms / "imagesTr" / f"{case}_0000.nii.gz"))
        sitk.WriteImage(lab, str(phantoms / "labelsTr" / f"{case}.nii.gz"))
    # and one whose label does not match its image (must be reported and skipped)
    img = sitk.ReadImage(str(phantoms / "imagesTr" / "ph21_00005_0000.nii.gz"))
    bad = sitk.Image([s // 2 for s in img.GetSize()], sitk.sitkUInt8)
    sitk.WriteImage(bad, str(phantoms / "labelsTr" / "ph21_00005.nii.gz"))
    return root, env, phantoms


@pytest.fixture(scope="module")
def prepared(nnunet_env):
    root, env, phantoms = nnunet_env
    r = pdac("prepare", "--images", str(phantoms / "imagesTr"), "--labels", str(phantoms / "labelsTr"),
             "--out", env["nnUNet_raw"], "--workers", "2", env=env)
    return r, root, env, phantoms


def test_prepare_writes_both_datasets_and_skips_geometry_mismatch(prepared):
    r, root, env, phantoms = prepared
    assert r.returncode == 0, r.stderr
    assert "ph21_00005" in r.stderr and "geometry" in r.stderr
    s1 = root / "raw" / "Dataset113_PANORAMA_Pancreas_Segmentation"
    s2 = root / "raw" / "Dataset114_PANORAMA_PDAC_Detection"
    d1, d2 = json.loads((s1 / "dataset.json").read_text()), json.loads((s2 / "dataset.json").read_text())
    assert d1["numTraining"] == d2["numTraining"] == 5
    assert d1["labels"] == {"background": 0, "pancreas": 1}
    assert d2["labels"]["PDAC"] == 1 and d2["labels"]["common_bile_duct"] == 6
    for i in range(5):
        case = f"ph21_{i:05d}"
        full_img = sitk.ReadImage(str(phantoms / "imagesTr" / f"{case}_0000.nii.gz"))
        full = sitk.GetArrayFromImage(sitk.ReadImage(str(phantoms / "labelsTr" / f"{case}.nii.gz")))
        low = sitk.ReadImage(str(s1 / "labelsTr" / f"{case}.nii.gz"))
        assert low.GetSpacing() == pytest.approx((4.5, 4.5, 9.0))
        assert set(np.unique(sitk.GetArrayFromImage(low))) <= {0, 1} and sitk.GetArrayFromImage(low).any()
        crop_img = sitk.ReadImage(str(s2 / "imagesTr" / f"{case}_0000.nii.gz"))
        crop_lab = sitk.GetArrayFromImage(sitk.ReadImage(str(s2 / "labelsTr" / f"{case}.nii.gz")))
        # original resolution and direction; every pancreas/lesion/duct voxel kept, all 7 labels kept
        assert crop_img.GetSpacing() == pytest.approx(full_img.GetSpacing())
        assert crop_img.GetDirection() == pytest.approx(full_img.GetDirection())
        for value in (1, 4, 5):
            assert (crop_lab == value).sum() == (full == value).sum()
        assert crop_lab.size < full.size


def test_nnunet_finds_our_trainers_through_ext_trainer():
    from pdac.train.trainers import trainers_path

    code = ("from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as f;"
            f"print([f(n).__name__ for n in {TRAINERS!r}])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "nnUNet_extTrainer": trainers_path()})
    assert r.returncode == 0, r.stderr
    assert all(t in r.stdout for t in TRAINERS)


@pytest.fixture(scope="module")
def tiny_plans(prepared):
    r, root, env, _ = prepared
    assert r.returncode == 0
    r = pdac("plan", "114", "--planner", "nnUNetPlannerResEncM", "--tiny", "TestTinyPlans", "--workers", "1", env=env)
    assert r.returncode == 0, r.stderr
    return root, env


def test_each_custom_trainer_trains_a_few_iterations(tiny_plans):
    root, env = tiny_plans
    plans = json.loads((root / "pre" / "Dataset114_PANORAMA_PDAC_Detection" / "TestTinyPlans.json").read_text())
    assert plans["configurations"]["3d_fullres"]["architecture"]["network_class_name"].endswith("ResidualEncoderUNet")
    for trainer in TRAINERS:
        r = pdac("train", "114", "0", "--trainer", trainer, "--plans", "TestTinyPlans", "--epochs", "1",
                 "--iterations", "2", "--val-iterations", "1", "--no-validation", "--device", "cpu", env=env)
        assert r.returncode == 0, r.stderr[-2000:]
        fold = (root / "results" / "Dataset114_PANORAMA_PDAC_Detection" / f"{trainer}__TestTinyPlans__3d_fullres"
                / "fold_0")
        assert (fold / "checkpoint_final.pth").is_file()
        log = next(fold.glob("training_log_*.txt")).read_text()
        assert "train_loss" in log and "nan" not in log.split("train_loss", 1)[1].splitlines()[0]
        # the AdamW twins start at lr 1e-3; the SGD trainers at nnU-Net's 1e-2
        first_lr = float(re.search(r"Current learning rate: (\S+)", log).group(1))
        assert first_lr == (1e-3 if trainer.endswith("_Adam1en3") else 1e-2)


def test_prepare_again_with_fewer_cases_leaves_no_stale_case(prepared, tmp_path):
    r, root, env, phantoms = prepared
    assert r.returncode == 0
    out = tmp_path / "raw"
    shutil.copytree(root / "raw", out)  # an earlier run's 5 cases
    subset = tmp_path / "subset"
    for sub in ("imagesTr", "labelsTr"):
        (subset / sub).mkdir(parents=True)
    for case in ("ph21_00000", "ph21_00001"):
        os.symlink(phantoms / "imagesTr" / f"{case}_0000.nii.gz", subset / "imagesTr" / f"{case}_0000.nii.gz")
        os.symlink(phantoms / "labelsTr" / f"{case}.nii.gz", subset / "labelsTr" / f"{case}.nii.gz")
    r = pdac("prepare", "--images", str(subset / "imagesTr"), "--labels", str(subset / "labelsTr"),
             "--out", str(out), env=env)
    assert r.returncode == 0, r.stderr
    for d in out.iterdir():
        assert json.loads((d / "dataset.json").read_text())["numTraining"] == 2
        assert sorted(p.name for p in (d / "labelsTr").iterdir()) == ["ph21_00000.nii.gz", "ph21_00001.nii.gz"]
        assert len(list((d / "imagesTr").iterdir())) == 2


def test_an_interrupted_training_resumes_at_the_epoch_after_its_newest_snapshot(tiny_plans):
    """A run killed after its second epoch (snapshots kept every epoch, nnU-Net's own checkpoint_latest only
    every 50) resumes at the third: not from scratch, not from checkpoint_best, no epoch repeated or skipped."""
    import torch

    root, env = tiny_plans
    trainer = "nnUNetTrainerTverskyLoss"
    args = ("train", "114", "1", "--trainer", trainer, "--plans", "TestTinyPlans", "--epochs", "3", "--iterations",
            "2", "--val-iterations", "1", "--no-validation", "--device", "cpu", "--snapshot-every", "1")
    assert pdac(*args, env=env).returncode == 0
    fold = root / "results" / "Dataset114_PANORAMA_PDAC_Detection" / f"{trainer}__TestTinyPlans__3d_fullres" / "fold_1"
    for name in ("checkpoint_final.pth", "checkpoint_epoch0003.pth", "checkpoint_best.pth"):
        (fold / name).unlink(missing_ok=True)  # what a kill during the third epoch leaves, best aside
    before = set(fold.glob("training_log_*.txt"))
    r = pdac(*args, "--resume", env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resuming from checkpoint_epoch0002.pth at epoch 2" in r.stderr
    log = (set(fold.glob("training_log_*.txt")) - before).pop().read_text()
    assert re.findall(r": Epoch (\d+)\s*$", log, re.MULTILINE) == ["2"]
    final = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert final["current_epoch"] == 3 and len(final["logging"]["train_losses"]) == 3


def test_resume_point_prefers_final_then_the_newest_snapshot_then_best(tmp_path):
    from pdac.train.training import resume_point

    assert resume_point(tmp_path) is None
    for i, name in enumerate(("checkpoint_best.pth", "checkpoint_epoch0006.pth", "checkpoint_latest.pth",
                              "checkpoint_epoch0012.pth")):
        (tmp_path / name).write_bytes(b"")
        os.utime(tmp_path / name, (1000 + i, 1000 + i))
        assert resume_point(tmp_path).name == name
    (tmp_path / "checkpoint_final.pth").write_bytes(b"")
    os.utime(tmp_path / "checkpoint_final.pth", (1, 1))
    assert resume_point(tmp_path).name == "checkpoint_final.pth"


def test_resume_with_a_warm_start_is_refused_in_one_line(tmp_path):
    r = pdac("train", "114", "0", "--resume", "--pretrained", str(tmp_path / "x.pth"), "--device", "cpu",
             env={"nnUNet_preprocessed": str(tmp_path), "nnUNet_results": str(tmp_path), "nnUNet_raw": str(tmp_path)})
    assert r.returncode == 2, r.stderr[-2000:]
    assert "exclude each other" in r.stderr.strip().splitlines()[-1]
