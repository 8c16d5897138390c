"""The GPU readiness command's path, run on the CPU with the demo weights (the GPU run itself is recorded in
docs/performance.md when a session has a GPU)."""

from __future__ import annotations

import json
import sys

import pytest
from conftest import WEIGHTS, run


@pytest.mark.parametrize("runs", [["one_fold"], pytest.param(["one_fold", "five_folds_tta"], marks=pytest.mark.slow)])
def test_gpu_check_runs_the_configurations_and_prints_its_summary_line(tmp_path, runs):
    out = tmp_path / "gpu.json"
    r = run([sys.executable, "-m", "pdac.lab.gpu_check", "--device", "cpu", "--size", "small",
             "--weights", str(WEIGHTS), "--json", str(out), "--runs", *runs])
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1].startswith("gpu_check device=cpu one_fold_s=")
    record = json.loads(out.read_text())
    assert list(record["runs"]) == runs
    assert all(record["runs"][name]["tta"] is (name == "five_folds_tta") for name in runs)
    for run_ in record["runs"].values():
        assert run_["stage1_s"] > 0 and run_["stage2_s"] > 0 and run_["total_s"] >= run_["stage2_s"]
    assert record["environment"]["torch"]


def test_gpu_check_without_cuda_says_so_in_one_line():
    r = run([sys.executable, "-m", "pdac.lab.gpu_check", "--device", "cuda"], env={"CUDA_VISIBLE_DEVICES": ""})
    assert r.returncode == 3
    assert "CUDA is not available" in r.stderr.strip().splitlines()[-1]
