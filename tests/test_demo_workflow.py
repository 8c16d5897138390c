"""The demo-weights workflow's resumable extensions: either stage starting from another weights folder's model
(a pickle: loaded only from bytes checked against that folder's manifest; stage 1 also takes that model's plans)
and a raised epoch budget continuing a finished run."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
from conftest import WEIGHTS

from pdac.errors import WeightsError
from pdac.lab.workflow import (
    BUDGET_RECORD,
    Budget,
    DatasetIds,
    Phantoms,
    WorkflowSettings,
    _trained_epochs,
    init_checkpoint,
    transfer_plans,
)


def settings(tmp_path, init=None, stage1_init=None) -> WorkflowSettings:
    return WorkflowSettings(work=tmp_path / "work", datasets=DatasetIds(1, 2), train=Phantoms("t", 1, 1),
                            heldout=Phantoms("h", 1, 2), stage2_budget=Budget(1, 1), stage2_init=init,
                            stage1_init=stage1_init)


def tampered_copy(tmp_path, path_in_weights: str):
    weights = tmp_path / "weights"
    shutil.copytree(WEIGHTS, weights)
    target = next(weights.glob(path_in_weights))
    data = bytearray(target.read_bytes())
    data[-2] ^= 1
    target.write_bytes(bytes(data))
    return weights


def test_stage2_init_copies_the_verified_lesion_checkpoint(tmp_path):
    (tmp_path / "work").mkdir()
    copy = init_checkpoint(settings(tmp_path, WEIGHTS))
    manifest = json.loads((WEIGHTS / "manifest.json").read_text())
    files = manifest["files"]
    lesion = [name for name in files if name.startswith("lesion/") and name.endswith(".pth")]
    assert copy is not None and len(lesion) == 1
    assert hashlib.sha256(copy.read_bytes()).hexdigest() == files[lesion[0]]
    assert init_checkpoint(settings(tmp_path)) is None


def test_stage2_init_refuses_a_modified_checkpoint(tmp_path):
    weights = tampered_copy(tmp_path, "lesion/**/*.pth")
    (tmp_path / "work").mkdir()
    with pytest.raises(WeightsError, match="checksum mismatch"):
        init_checkpoint(settings(tmp_path, weights))
    assert not (tmp_path / "work" / "stage2_init.pth").exists()


def test_stage1_init_copies_the_verified_pancreas_checkpoint_and_its_plans(tmp_path):
    (tmp_path / "work").mkdir()
    s = settings(tmp_path, stage1_init=WEIGHTS)
    copy = init_checkpoint(s, stage=1)
    files = json.loads((WEIGHTS / "manifest.json").read_text())["files"]
    pancreas = [name for name in files if name.startswith("pancreas/") and name.endswith(".pth")]
    assert copy is not None and copy.name == "stage1_init.pth" and len(pancreas) == 1
    assert hashlib.sha256(copy.read_bytes()).hexdigest() == files[pancreas[0]]
    assert init_checkpoint(s, stage=2) is None  # stage 2 has no init of its own here

    preprocessed = tmp_path / "Dataset001_Mine"
    preprocessed.mkdir()
    transfer_plans(s, preprocessed)
    plans = json.loads((preprocessed / f"{s.plans(1)}.json").read_text())
    source = json.loads((WEIGHTS / "pancreas" / "plans.json").read_text())
    assert plans["dataset_name"] == "Dataset001_Mine" and plans["plans_name"] == s.plans(1)
    assert plans["configurations"] == source["configurations"]  # same network, patch, spacing, normalisation


def test_stage1_init_refuses_modified_plans(tmp_path):
    weights = tampered_copy(tmp_path, "pancreas/plans.json")
    preprocessed = tmp_path / "Dataset001_Mine"
    preprocessed.mkdir()
    with pytest.raises(WeightsError, match="checksum mismatch"):
        transfer_plans(settings(tmp_path, stage1_init=weights), preprocessed)
    assert not any(preprocessed.iterdir())


@pytest.mark.parametrize("record, budget, expected", [
    (None, Budget(90, 25), None),  # no record: treated as done
    ({"epochs": 60, "iterations": 25}, Budget(90, 25), 60),  # raised: continue from 60
    ({"epochs": 60, "iterations": 25}, Budget(60, 25), 60),  # the same: done
    ({"epochs": 60, "iterations": 30}, Budget(90, 25), None),  # other iterations per epoch: not a continuation
])
def test_a_raised_epoch_budget_continues_only_a_matching_run(tmp_path, record, budget, expected):
    if record is not None:
        (tmp_path / BUDGET_RECORD).write_text(json.dumps(record))
    assert _trained_epochs(tmp_path, budget) == expected


def test_stage1_init_refuses_plans_without_a_3d_configuration_in_one_line(tmp_path):
    from pdac.errors import UsageError
    from pdac.infer.weights import write_manifest

    weights = tmp_path / "weights"
    shutil.copytree(WEIGHTS, weights)
    preprocessed = tmp_path / "Dataset001_Mine"
    preprocessed.mkdir()
    for text, message in (("not json {", "no readable plans.json"), ('{"configurations": {}}', "no 3d_fullres")):
        (weights / "pancreas" / "plans.json").write_text(text)
        write_manifest(weights)  # hashed as it is: the manifest vouches for the bytes, not for their sense
        with pytest.raises(UsageError, match=message):
            transfer_plans(settings(tmp_path, stage1_init=weights), preprocessed)
    assert not any(preprocessed.iterdir())


def test_model_card_says_which_models_each_stage_started_from():
    from pdac.lab.export import demo_model_card, weights_readme

    heldout = {"cases": 24, "positives": 12, "auroc": 0.8, "ap": 0.7, "score": 0.75, "pancreas_found": 24}
    summary = {"selected_trainer": "T", "stage1_trainer": "S", "train_seed": 1, "heldout_seed": 2,
               "candidates": {"T": {"checkpoint": "c.pth", "validation": {"score": 0.5}, "heldout": heldout}},
               "budget": {"stage1_epochs": 40, "stage1_iterations": 25, "stage2_epochs": 50, "stage2_iterations": 30},
               "stage1_init": "pancreas-card 1", "stage2_init": "lesion-card 2"}
    trained_on = demo_model_card(summary, "v")["trained_on"]
    assert "starting from the pancreas model of pancreas-card 1" in trained_on.split("; stage 2")[0]
    assert "starting from the lesion model of lesion-card 2" in trained_on.split("; stage 2")[1]
    assert "fine-tuned from the pancreas model (and plans) of pancreas-card 1" in weights_readme(summary)
    assert "pancreas-card" not in demo_model_card({**summary, "stage1_init": None}, "v")["trained_on"]


def test_a_work_folder_drawn_with_other_phases_is_refused(tmp_path):
    """Resuming with `--phases` on volumes drawn with every phase would train on the wrong set: refused, not reused."""
    import dataclasses

    from pdac.errors import UsageError
    from pdac.lab.synth.paint import SynthSpec
    from pdac.lab.synth.tissues import IntensitySettings, only_phases
    from pdac.lab.workflow import _make_from_labelmaps

    s = dataclasses.replace(settings(tmp_path), labelmaps=tmp_path / "maps")
    for folder in ("t", "h"):
        (s.work / folder).mkdir(parents=True)
        (s.work / folder / "truth.json").write_text(json.dumps(
            {"generator": "labelmaps", "spec": json.loads(json.dumps(dataclasses.asdict(SynthSpec())))}))
    assert _make_from_labelmaps(s) == (s.work / "t", s.work / "h")  # drawn as asked: reused
    venous = dataclasses.replace(SynthSpec(), intensities=only_phases(IntensitySettings(), ("venous",)))
    with pytest.raises(UsageError, match=r"other generator settings \(intensities.phase_probability\); use a new"):
        _make_from_labelmaps(dataclasses.replace(s, synth_spec=venous))
