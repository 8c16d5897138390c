"""A stage-1 mask that is not a pancreas does not make the lesion stage unbounded (issue #30, class 10).

The stage-1 model here is the demo one with its output layers set to call every voxel pancreas, as an
undertrained real-size stage 1 did: real weights, re-hashed into a manifest, run through `pdac detect` on a
full-size (512 x 512) phantom. The implausible mask is reported before stage 2 starts, and stage 2 runs on at
most the configured typical region of interest, not on the whole scan."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import REPO, pdac

from pdac.config import load_config


@pytest.fixture(scope="module")
def everything_pancreas(tmp_path_factory):
    weights = tmp_path_factory.mktemp("weights") / "weights"
    shutil.copytree(REPO / "weights", weights)
    checkpoint = weights / "pancreas" / "fold_all" / "checkpoint_final.pth"
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)  # our own bundled, verified file
    for key, value in state["network_weights"].items():
        if key.startswith("decoder.seg_layers."):
            value.zero_()
            if key.endswith(".bias"):
                value[0], value[1] = -20.0, 20.0  # background vs pancreas logits: pancreas everywhere
    torch.save(state, checkpoint)
    r = pdac("weights-manifest", str(weights))
    assert r.returncode == 0, r.stderr[-2000:]
    return weights


@pytest.fixture(scope="module")
def full_size_scan(tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    r = pdac("phantom", "-o", str(out), "-n", "1", "--size", "full", "--seed", "7", "--previews", "0",
             "--orientation", "identity")
    assert r.returncode == 0, r.stderr[-2000:]
    (scan,) = sorted((out / "imagesTr").glob("*_0000.*"))
    return scan


def test_an_implausible_whole_body_mask_gets_a_typical_crop_quickly(everything_pancreas, full_size_scan, tmp_path):
    scan = sitk.ReadImage(str(full_size_scan))
    assert scan.GetSize()[0] == 512
    t0 = time.monotonic()
    r = pdac("detect", str(full_size_scan), "-o", str(tmp_path / "out"), "--weights", str(everything_pancreas))
    seconds = time.monotonic() - t0
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stderr.splitlines()
    warned = next(i for i, ln in enumerate(lines) if "implausible stage-1 pancreas" in ln and "WARNING" in ln)
    stage2 = next(i for i, ln in enumerate(lines) if "stage 2 on a" in ln)
    assert warned < stage2, "the implausible mask must be reported before the long stage"
    (record_file,) = (tmp_path / "out").glob("*_lesions.json")
    record = json.loads(record_file.read_text())
    assert record["pancreas"]["plausible"] is False
    crop_mm = np.asarray(record["crop_index_xyz"]["size"]) * np.asarray(scan.GetSpacing())
    typical = np.asarray(load_config().crop.fallback_extent_mm)
    scan_mm = np.asarray(scan.GetSize()) * np.asarray(scan.GetSpacing())
    assert np.all(crop_mm <= typical + 2 * np.asarray(scan.GetSpacing())), (crop_mm, typical)
    assert np.prod(crop_mm) < 0.5 * np.prod(scan_mm), "stage 2 ran on most of the scan"
    assert seconds < 120, f"{seconds:.0f} s for one full-size case on the CPU"
