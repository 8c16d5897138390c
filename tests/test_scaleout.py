"""Scale-out: `pdac train --num-gpus N` hands over to nnU-Net's DDP training (checked on the CPU as far as
it can be: the refusals through the real CLI, and the hand-over with nnU-Net's launcher replaced)."""

from __future__ import annotations

import pytest
from conftest import pdac


@pytest.mark.parametrize(("extra", "message"), [
    (["--num-gpus", "2", "--device", "cuda", "--epochs", "3"], "--epochs cannot be combined with --num-gpus"),
    (["--num-gpus", "2", "--device", "cpu"], "--num-gpus needs --device cuda"),
    (["--num-gpus", "0"], "--num-gpus must be at least 1"),
    (["--num-gpus", "2", "--device", "cuda"], "--num-gpus 2: only 0 CUDA device(s) visible"),
])
def test_num_gpus_refusals_are_one_line_usage_errors(extra, message):
    r = pdac("train", "114", "0", *extra, env={"CUDA_VISIBLE_DEVICES": ""})
    assert r.returncode == 2, r.stderr
    assert message in r.stderr.strip().splitlines()[-1]
    assert "Traceback" not in r.stderr


def test_num_gpus_hands_the_fold_to_nnunets_ddp_launcher(monkeypatch):
    import torch
    from nnunetv2.run import run_training as nnunet_run

    from pdac.cli import main

    calls = []
    monkeypatch.setattr(nnunet_run, "run_training", lambda *a, **k: calls.append((a, k)))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert main(["train", "114", "3", "--num-gpus", "2", "--device", "cuda", "--trainer", "nnUNetTrainerTverskyLoss",
                 "--plans", "nnUNetResEncUNetMPlans", "--resume"]) == 0
    (args, kwargs), = calls
    assert args == ("114", "3d_fullres", 3, "nnUNetTrainerTverskyLoss", "nnUNetResEncUNetMPlans")
    assert kwargs["num_gpus"] == 2 and kwargs["continue_training"] is True
    assert kwargs["device"].type == "cuda"
