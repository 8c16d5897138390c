"""What produced an output: the weights' model card (`model.json`, covered by the manifest), the manifest's
SHA-256, the pdac version and the effective configuration.

A weights folder carries `model.json` beside `manifest.json`; `pdac weights-manifest` writes a template when it
is missing and refuses a card without the required fields. Inference reads it after the manifest check, puts
name, version and `synthetic` into every lesion list, and warns once when the weights are synthetic.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from pdac.config import PipelineConfig
from pdac.errors import WeightsError
from pdac.safe_read import loads_json, read_json

log = logging.getLogger(__name__)

MODEL_CARD = "model.json"
MANIFEST = "manifest.json"  # as in pdac.infer.weights
TEXT_FIELDS = ("name", "version", "trained_on", "intended_use", "license")
REQUIRED_FIELDS = (*TEXT_FIELDS, "synthetic", "heldout_metrics")
PLACEHOLDER = "<fill in"
SYNTHETIC_WARNING = "synthetic demo weights"


def card_template(weights_dir: Path) -> dict[str, Any]:
    """A card with every required field, none of them filled in (so it is refused until someone does)."""
    return {
        "name": f"{PLACEHOLDER}: model name, e.g. {Path(weights_dir).resolve().name}>",
        "version": f"{PLACEHOLDER}: version of these weights>",
        "trained_on": f"{PLACEHOLDER}: training data (dataset, number of scans, labels)>",
        "synthetic": None,
        "heldout_metrics": {"data": f"{PLACEHOLDER}: the held-out data the metrics were measured on>",
                            "patient_auroc": None, "lesion_ap": None},
        "intended_use": f"{PLACEHOLDER}: intended use and its limits>",
        "license": f"{PLACEHOLDER}: license of the weights>",
    }


def card_problems(card: Any) -> list[str]:
    """What is missing or not filled in; empty when the card is complete."""
    if not isinstance(card, dict):
        return ["not a JSON object"]
    problems = [f for f in TEXT_FIELDS
                if not isinstance(card.get(f), str) or not card[f].strip() or card[f].startswith(PLACEHOLDER)]
    if not isinstance(card.get("synthetic"), bool):
        problems.append("synthetic (true or false)")
    metrics = card.get("heldout_metrics")
    data = metrics.get("data") if isinstance(metrics, dict) else None
    numbers = [k for k, v in (metrics or {}).items() if k != "data" and isinstance(v, int | float)
               and not isinstance(v, bool)] if isinstance(metrics, dict) else []
    if not isinstance(data, str) or not data.strip() or data.startswith(PLACEHOLDER) or not numbers:
        problems.append("heldout_metrics (a 'data' description and at least one number)")
    return problems


def load_card(path: Path) -> dict[str, Any]:
    """Read and check a model card; WeightsError (one line) if unreadable or incomplete."""
    try:
        card = read_json(path, WeightsError, max_bytes=1024 * 1024)  # regular file, bounded size and depth
    except WeightsError as e:
        raise WeightsError(f"cannot read the model card: {e}") from None
    problems = card_problems(card)
    if problems:
        raise WeightsError(f"{path}: model card incomplete, fill in: {', '.join(problems)}")
    return card


def ensure_model_card(weights_dir: Path) -> dict[str, Any]:
    """For `pdac weights-manifest`: the checked card, or a template written and a refusal when there is none."""
    path = Path(weights_dir) / MODEL_CARD
    if not path.exists():
        if not Path(weights_dir).is_dir():
            raise WeightsError(f"weights folder not found: {weights_dir}")
        path.write_text(json.dumps(card_template(weights_dir), indent=1) + "\n")
        raise WeightsError(f"{path}: no model card; wrote a template: fill in {', '.join(REQUIRED_FIELDS)}, "
                           "then run `pdac weights-manifest` again")
    return load_card(path)


def write_model_card(weights_dir: Path, card: dict[str, Any]) -> Path:
    """Write a complete card (refused if incomplete); the manifest must be regenerated afterwards."""
    problems = card_problems(card)
    if problems:
        raise WeightsError(f"model card incomplete, fill in: {', '.join(problems)}")
    path = Path(weights_dir) / MODEL_CARD
    path.write_text(json.dumps(card, indent=1) + "\n")
    return path


def pdac_version() -> str:
    """The running code's version: `pdac.__version__` (the parent package is loaded with this module; not
    imported by name, the package root being the CLI's room), else the installed distribution's."""
    version = getattr(sys.modules.get("pdac"), "__version__", None)
    if version:
        return str(version)
    try:
        return metadata.version("pdac")
    except metadata.PackageNotFoundError:
        return "unknown"


def config_sha256(config: PipelineConfig) -> str:
    canonical = json.dumps(config.to_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def weights_provenance(weights_dir: Path, config: PipelineConfig) -> dict[str, Any]:
    """The `provenance` record of every lesion list. Call after the manifest was verified: a card present
    but not listed in the manifest is refused (it could say anything)."""
    weights_dir = Path(weights_dir)
    manifest_bytes = (weights_dir / MANIFEST).read_bytes()
    listed = loads_json(manifest_bytes, str(weights_dir / MANIFEST), WeightsError).get("files", {})
    card_path = weights_dir / MODEL_CARD
    model = None
    if card_path.exists():
        if MODEL_CARD not in listed:
            raise WeightsError(f"{card_path}: model card not in the manifest (run `pdac weights-manifest`)")
        card = load_card(card_path)
        model = {"name": card["name"], "version": card["version"], "synthetic": card["synthetic"]}
        if card["synthetic"]:
            log.warning("%s: %s (%s %s): results are not meaningful on patient scans", weights_dir,
                        SYNTHETIC_WARNING, card["name"], card["version"])
    else:
        log.warning("%s: no model card (%s): outputs cannot say which model produced them", weights_dir,
                    MODEL_CARD)
    return {
        "model": model,
        "weights": str(weights_dir),
        "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
        "pdac_version": pdac_version(),
        "config_sha256": config_sha256(config),
        "config": config.to_dict(),
    }


def overlay_label(provenance: dict[str, Any]) -> str | None:
    """The banner an overlay PNG must carry, if any."""
    model = provenance.get("model")
    if model is None:
        return "weights without a model card: provenance unknown"
    return f"{SYNTHETIC_WARNING.upper()}: not meaningful on patient scans" if model["synthetic"] else None
