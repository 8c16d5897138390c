"""Issue 30, class 9: the real-data recipe as a new user meets it. `pdac prepare --images` finds scans in
batch sub-folders, `pdac train` with fewer cases than folds is one line, and every option of every
subcommand says what it is for in `--help`."""

from __future__ import annotations

import argparse
import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import WEIGHTS, pdac

from pdac.cli import build_parser


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


@pytest.mark.parametrize("command", sorted(_subparsers(build_parser())))
def test_every_option_of_every_subcommand_has_help_text(command):
    sub = _subparsers(build_parser())[command]
    bare = [a.option_strings[-1] if a.option_strings else a.dest for a in sub._actions
            if not isinstance(a, argparse._HelpAction) and not (a.help or "").strip()]
    assert not bare, f"pdac {command}: options without help: {bare}"


def test_prepare_help_reads_like_a_tools_help():
    r = pdac("prepare", "--help", env={"COLUMNS": "200"})  # argparse wraps help text to the terminal
    assert r.returncode == 0
    assert "sub-folders searched too, e.g. batch_1/" in r.stdout and "nnU-Net dataset id" in r.stdout


def _case(images, labels, batch: str, case: str):
    label = np.zeros((16, 16, 16), np.uint8)
    label[6:10, 6:10, 6:10] = 4  # pancreas
    label[7:9, 7:9, 7:9] = 1  # PDAC
    image = np.where(label > 0, 100, -100).astype(np.int16)
    for folder, array, name in ((images / batch, image, f"{case}_0000.nii.gz"), (labels, label, f"{case}.nii.gz")):
        folder.mkdir(parents=True, exist_ok=True)
        itk = sitk.GetImageFromArray(array)
        itk.SetSpacing((2.0, 2.0, 2.0))
        sitk.WriteImage(itk, str(folder / name))


def test_prepare_finds_scans_in_batch_sub_folders(tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    _case(images, labels, "batch_1", "100001_00001")
    _case(images, labels, "batch_2", "100002_00001")
    r = pdac("prepare", "--images", str(images), "--labels", str(labels), "--out", str(tmp_path / "raw"),
             "--no-verify", env={"nnUNet_raw": str(tmp_path / "raw")})
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1].startswith("prepared 2 cases")
    s2 = tmp_path / "raw" / "Dataset114_PANORAMA_PDAC_Detection" / "imagesTr"
    assert sorted(p.name for p in s2.iterdir()) == ["100001_00001_0000.nii.gz", "100002_00001_0000.nii.gz"]


def test_prepare_refuses_one_case_in_two_batch_folders(tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    _case(images, labels, "batch_1", "100001_00001")
    _case(images, labels, "batch_2", "100001_00001")
    r = pdac("prepare", "--images", str(images), "--labels", str(labels), "--out", str(tmp_path / "raw"),
             "--no-verify")
    assert r.returncode == 2
    assert "case 100001_00001 appears twice" in r.stderr.strip().splitlines()[-1]


@pytest.fixture
def tiny_dataset(tmp_path):
    pre = tmp_path / "pre" / "Dataset990_Tiny"
    pre.mkdir(parents=True)
    shutil.copy(WEIGHTS / "lesion" / "plans.json", pre / "nnUNetPlans.json")
    dataset = json.loads((WEIGHTS / "lesion" / "dataset.json").read_text())
    dataset["numTraining"] = 3
    (pre / "dataset.json").write_text(json.dumps(dataset))
    return {"nnUNet_raw": str(tmp_path / "raw"), "nnUNet_preprocessed": str(tmp_path / "pre"),
            "nnUNet_results": str(tmp_path / "results")}


@pytest.mark.parametrize("fold,message", [
    ("0", "Dataset990_Tiny: 3 training case(s), fewer than nnU-Net's 5 folds; train fold 'all'"),
    ("x", "fold must be a number (0-4) or 'all', got 'x'"),
])
def test_train_with_fewer_cases_than_folds_is_one_line(tiny_dataset, fold, message):
    r = pdac("train", "990", fold, "--plans", "nnUNetPlans", "--device", "cpu", env=tiny_dataset)
    assert r.returncode == 2, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    assert message in r.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("command", [["prepare", "--images", "i", "--labels", "l", "--out", "o"], ["plan", "114"],
                                     ["phantom", "-o", "o"]])
def test_a_worker_count_below_one_is_refused_by_the_parser(command):
    r = pdac(*command, "--workers", "0")
    assert r.returncode == 2
    assert "expected 1 to 256 processes, got '0'" in r.stderr.strip().splitlines()[-1]
