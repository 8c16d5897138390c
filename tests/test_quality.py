"""Quality of the bundled demo weights on fresh held-out phantoms (slow: about 10 minutes on 2 cores).

Through the real CLI: `pdac phantom` (a seed used neither for training nor for the recorded held-out set)
-> `pdac detect` with the default configuration -> `pdac evaluate`. Synthetic; the target is #3's
patient AUROC >= 0.85 on 20+ held-out phantoms."""

import json

import pytest
from conftest import pdac

pytestmark = pytest.mark.slow


def test_demo_weights_reach_the_auroc_target_on_unseen_phantoms(tmp_path):
    phantoms, det, report = tmp_path / "phantoms", tmp_path / "det", tmp_path / "report"
    r = pdac("phantom", "-o", str(phantoms), "-n", "24", "--seed", "3", "--positive-fraction", "0.5",
             "--previews", "0", timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    r = pdac("detect", str(phantoms / "imagesTr"), "-o", str(det), timeout=3600)
    assert r.returncode == 0, r.stderr[-2000:]
    r = pdac("evaluate", "--detections", str(det), "--labels", str(phantoms / "labelsTr"),
             "--likelihoods", str(det / "pdac-likelihood.json"), "-o", str(report), "--bootstrap", "0",
             timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads((report / "metrics.json").read_text())["sets"][0]
    assert result["num_cases"] == 24
    assert result["auroc"] >= 0.85, result
