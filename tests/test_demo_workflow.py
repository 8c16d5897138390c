"""The demo-weights workflow's two resumable extensions: stage 2 starting from another weights folder's lesion
model (a pickle: loaded only from bytes checked against that folder's manifest) and a raised epoch budget
continuing a finished run."""

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
)


def settings(tmp_path, init=None) -> WorkflowSettings:
    return WorkflowSettings(work=tmp_path / "work", datasets=DatasetIds(1, 2), train=Phantoms("t", 1, 1),
                            heldout=Phantoms("h", 1, 2), stage2_budget=Budget(1, 1), stage2_init=init)


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
    weights = tmp_path / "weights"
    shutil.copytree(WEIGHTS, weights)
    ckpt = next((weights / "lesion").rglob("*.pth"))
    data = bytearray(ckpt.read_bytes())
    data[-1] ^= 1
    ckpt.write_bytes(bytes(data))
    (tmp_path / "work").mkdir()
    with pytest.raises(WeightsError, match="checksum mismatch"):
        init_checkpoint(settings(tmp_path, weights))
    assert not (tmp_path / "work" / "stage2_init.pth").exists()


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
