"""The weights' model card (model.json): covered by the manifest, written as a template and refused when
incomplete by `pdac weights-manifest`, and what it says (synthetic or not) reaches the logs, the lesion list
and the overlay."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import WEIGHTS, pdac
from PIL import Image

from pdac.infer.overlay import BANNER_COLOUR
from pdac.infer.provenance import REQUIRED_FIELDS, card_problems

MAGENTA = tuple(int(BANNER_COLOUR[i:i + 2], 16) for i in (1, 3, 5))
SYNTHETIC_LINE = "results are not meaningful on patient scans"


@pytest.fixture
def weights(tmp_path):
    copy = tmp_path / "weights"
    shutil.copytree(WEIGHTS, copy)
    return copy


def test_the_demo_card_is_complete_synthetic_and_in_the_committed_manifest(weights):
    card = json.loads((WEIGHTS / "model.json").read_text())
    assert card_problems(card) == [] and card["synthetic"] is True
    assert "model.json" in json.loads((WEIGHTS / "manifest.json").read_text())["files"]
    # regenerating the manifest of unchanged weights gives the committed one, byte for byte
    r = pdac("weights-manifest", str(weights))
    assert r.returncode == 0, r.stderr
    assert (weights / "manifest.json").read_bytes() == (WEIGHTS / "manifest.json").read_bytes()


def test_weights_manifest_writes_a_template_and_refuses_until_it_is_filled_in(weights):
    (weights / "model.json").unlink()
    manifest = (weights / "manifest.json").read_bytes()
    r = pdac("weights-manifest", str(weights))
    assert r.returncode == 4
    errors = [ln for ln in r.stderr.splitlines() if "ERROR" in ln]
    assert len(errors) == 1 and "template" in errors[0] and "Traceback" not in r.stderr
    template = json.loads((weights / "model.json").read_text())
    assert set(REQUIRED_FIELDS) <= set(template)
    assert (weights / "manifest.json").read_bytes() == manifest  # nothing re-hashed
    r = pdac("weights-manifest", str(weights))  # the unfilled template is refused too
    assert r.returncode == 4 and "model card incomplete" in r.stderr


@pytest.mark.parametrize(("change", "named"), [
    ({"license": None}, "license"),
    ({"synthetic": "yes"}, "synthetic"),
    ({"heldout_metrics": {"patient_auroc": 0.9}}, "heldout_metrics"),
    ({"heldout_metrics": {"data": "24 phantoms"}}, "heldout_metrics"),
])
def test_an_incomplete_card_is_refused_in_one_line(weights, change, named):
    card = json.loads((weights / "model.json").read_text())
    card.update(change)
    card = {k: v for k, v in card.items() if v is not None}
    (weights / "model.json").write_text(json.dumps(card))
    r = pdac("weights-manifest", str(weights))
    assert r.returncode == 4
    errors = [ln for ln in r.stderr.splitlines() if "ERROR" in ln]
    assert len(errors) == 1 and named in errors[0], r.stderr


def test_the_card_is_covered_by_the_manifest(weights, phantom_scans, tmp_path):
    card = json.loads((weights / "model.json").read_text())
    (weights / "model.json").write_text(json.dumps({**card, "synthetic": False}, indent=1) + "\n")
    r = pdac("detect", str(phantom_scans["identity"]), "-o", str(tmp_path / "out"), "--weights", str(weights))
    assert r.returncode == 4 and "checksum" in r.stderr and "model.json" in r.stderr


def test_a_card_not_in_the_manifest_is_refused(weights, phantom_scans, tmp_path):
    manifest = json.loads((weights / "manifest.json").read_text())
    del manifest["files"]["model.json"]
    (weights / "manifest.json").write_text(json.dumps(manifest))
    r = pdac("detect", str(phantom_scans["identity"]), "-o", str(tmp_path / "out"), "--weights", str(weights))
    assert r.returncode == 4 and "not in the manifest" in r.stderr


def test_real_weights_get_no_synthetic_warning_or_label(weights, phantom_scans, tmp_path):
    """The same models with a card that says synthetic: false: no warning, no banner, provenance says so."""
    card = json.loads((weights / "model.json").read_text())
    (weights / "model.json").write_text(json.dumps({**card, "name": "not-synthetic", "synthetic": False}))
    assert pdac("weights-manifest", str(weights)).returncode == 0
    out = tmp_path / "out"
    r = pdac("detect", str(phantom_scans["identity"]), "-o", str(out), "--weights", str(weights), "--overlays")
    assert r.returncode == 0, r.stderr[-3000:]
    assert SYNTHETIC_LINE not in r.stderr
    provenance = json.loads((out / "case_identity_lesions.json").read_text())["provenance"]
    assert provenance["model"] == {"name": "not-synthetic", "version": card["version"], "synthetic": False}
    rgb = np.asarray(Image.open(out / "case_identity_overlay.png").convert("RGB"))
    assert not np.all(rgb == MAGENTA, axis=-1).any()
