"""Checkpoint selection by the challenge metric.

Each saved checkpoint of one fold (`checkpoint_epochNNNN.pth`, `checkpoint_best.pth`,
`checkpoint_final.pth`) runs the real detection path (lesion model on the stage-2 crop + candidate
extraction) on that fold's validation cases; the one with the best (AUROC + AP) / 2 (picai_eval,
IoU >= 0.1, label 1) is copied to `checkpoint_best_panorama.pth`. nnU-Net's own files stay as they are.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

import SimpleITK as sitk
from tqdm import tqdm

from pdac.config import PipelineConfig
from pdac.errors import InputError, UsageError
from pdac.evaluation.metrics import evaluate_arrays
from pdac.infer.candidates import candidates
from pdac.infer.lesion import lesion_probability
from pdac.infer.models import load_model, resolve_device
from pdac.infer.weights import unverified_model_folder
from pdac.safe_read import read_json

log = logging.getLogger(__name__)

SELECTED = "checkpoint_best_panorama.pth"


def validation_cases(splits_file: Path, fold: int) -> list[str]:
    splits = read_json(splits_file, InputError)
    if not 0 <= fold < len(splits):
        raise UsageError(f"{splits_file}: no fold {fold}")
    return list(splits[fold]["val"])


def candidate_checkpoints(fold_dir: Path) -> list[str]:
    names = sorted(p.name for p in fold_dir.glob("checkpoint_epoch*.pth"))
    names += [n for n in ("checkpoint_best.pth", "checkpoint_final.pth") if (fold_dir / n).is_file()]
    return names


def select_checkpoint(model_folder: Path, fold: int, raw_dataset: Path, splits_file: Path,
                      config: PipelineConfig, device: str = "cpu") -> dict:
    """Score every checkpoint of `fold`; copy the best to checkpoint_best_panorama.pth. Returns the scores."""
    model_folder, raw_dataset = Path(model_folder), Path(raw_dataset)
    fold_dir = model_folder / f"fold_{fold}"
    names = candidate_checkpoints(fold_dir)
    if not names:
        raise UsageError(f"{fold_dir}: no checkpoints to choose from")
    ending = read_json(raw_dataset / "dataset.json", InputError)["file_ending"]
    cases = validation_cases(splits_file, fold)
    images = {c: sitk.ReadImage(str(raw_dataset / "imagesTr" / f"{c}_0000{ending}"), sitk.sitkFloat32) for c in cases}
    labels = {c: sitk.GetArrayFromImage(sitk.ReadImage(str(raw_dataset / "labelsTr" / f"{c}{ending}"))) for c in cases}
    torch_device = resolve_device(device)
    scores = {}
    for name in tqdm(names, desc=f"checkpoints fold {fold}", unit="ckpt"):
        cfg = dataclasses.replace(config.stage2, folds=(fold,), checkpoints=(name,), tta=False)
        # one's own training output: no manifest to check against
        model = load_model(unverified_model_folder(model_folder), cfg, torch_device)
        detections = {c: candidates(lesion_probability(model, img, config.stage2.lesion_channel),
                                    config.detection)[0] for c, img in images.items()}
        m = evaluate_arrays(detections, labels, name=name).metrics
        scores[name] = {"auroc": float(m.auroc), "ap": float(m.AP), "score": float((m.auroc + m.AP) / 2)}
        log.info("%s: AUROC %.3f AP %.3f score %.3f", name, m.auroc, m.AP, scores[name]["score"])
    best = max(scores, key=lambda n: (scores[n]["score"], n))
    shutil.copyfile(fold_dir / best, fold_dir / SELECTED)
    result = {"selected": best, "validation_cases": len(cases), "scores": scores}
    (fold_dir / "checkpoint_selection.json").write_text(json.dumps(result, indent=1))
    log.info("selected %s (score %.3f) -> %s", best, scores[best]["score"], fold_dir / SELECTED)
    return result

