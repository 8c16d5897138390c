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


def test_shards_merge_into_one_likelihood_file_and_a_missing_shard_is_named(tmp_path, phantom_scans):
    import json

    scans = tmp_path / "scans"
    scans.mkdir()
    for name in ("identity", "flipped"):
        (scans / phantom_scans[name].name).symlink_to(phantom_scans[name])
    out = tmp_path / "out"
    for k in (0, 1):
        r = pdac("detect", str(scans), "-o", str(out), "--shard", f"{k}/2")
        assert r.returncode == 0, r.stderr[-2000:]
    shard1 = json.loads((out / "pdac-likelihood.shard1of2.json").read_text())

    (out / "pdac-likelihood.shard1of2.json").rename(tmp_path / "held-back.json")
    r = pdac("merge", str(out))
    assert r.returncode == 3
    assert "1 of 2 shards missing (pdac-likelihood.shard1of2.json)" in r.stderr.strip().splitlines()[-1]
    assert not (out / "pdac-likelihood.json").exists()

    (tmp_path / "held-back.json").rename(out / "pdac-likelihood.shard1of2.json")
    r = pdac("merge", str(out))
    assert r.returncode == 0, r.stderr
    merged = json.loads((out / "pdac-likelihood.json").read_text())
    assert set(merged) == {"case_identity", "case_flipped"}
    assert shard1.items() <= merged.items()


def test_merge_refuses_conflicting_or_mixed_shard_files(tmp_path):
    import json

    (tmp_path / "pdac-likelihood.shard0of2.json").write_text(json.dumps({"a": 0.5}))
    (tmp_path / "pdac-likelihood.shard1of2.json").write_text(json.dumps({"a": 0.6}))
    r = pdac("merge", str(tmp_path))
    assert r.returncode == 3 and "case a has two likelihoods" in r.stderr
    (tmp_path / "pdac-likelihood.shard1of2.json").unlink()
    (tmp_path / "pdac-likelihood.shard0of3.json").write_text(json.dumps({"b": 0.1}))
    r = pdac("merge", str(tmp_path))
    assert r.returncode == 3 and "shard files of different runs" in r.stderr
    assert pdac("merge", str(tmp_path / "empty-but-missing")).returncode == 3
