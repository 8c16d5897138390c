"""Demo weights, last steps: pick checkpoints, compare candidate lesion trainers on held-out
phantoms through the full pipeline, copy the winner into weights/ with its manifest and results."""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import shutil
from pathlib import Path

import SimpleITK as sitk
from tqdm import tqdm

from pdac.config import load_config
from pdac.evaluation.metrics import evaluate_arrays
from pdac.infer.io import case_id
from pdac.infer.provenance import write_model_card
from pdac.infer.weights import write_manifest
from pdac.lab.workflow import FINAL, ModelExport, WorkflowSettings, export_weights, model_folder
from pdac.train.select_checkpoint import SELECTED, select_checkpoint

log = logging.getLogger(__name__)

MIN_PANCREAS_FOUND = 0.9  # share of held-out phantoms on which stage 1 must find the pancreas


class ExportRefused(RuntimeError):
    """The trained models fail a sanity check; nothing is written to the output folder."""


def heldout_metrics(weights: Path, heldout: Path) -> dict:
    """Full pipeline (default configuration) on held-out phantoms; picai_eval metrics."""
    from pdac.infer.pipeline import Pipeline

    pipeline = Pipeline(load_config(), weights=str(weights))
    tta = pipeline.config.stage2.mirroring_on(pipeline.device.type)
    detections, labels, likelihoods, pancreas_found = {}, {}, {}, 0
    for image_path in tqdm(sorted((heldout / "imagesTr").iterdir()), desc=f"held-out {weights.name}", unit="case"):
        case = case_id(image_path)
        result = pipeline.run(sitk.ReadImage(str(image_path), sitk.sitkFloat32), case)
        detections[case] = sitk.GetArrayFromImage(result.detection_map)
        likelihoods[case] = result.likelihood
        pancreas_found += result.pancreas_found
        labels[case] = sitk.GetArrayFromImage(sitk.ReadImage(str(heldout / "labelsTr" / f"{case}.nii.gz")))
    m = evaluate_arrays(detections, labels, likelihoods, name=weights.name).metrics
    return {"cases": len(detections), "positives": int(sum(m.case_target.values())), "auroc": round(float(m.auroc), 4),
            "ap": round(float(m.AP), 4), "score": round(float((m.auroc + m.AP) / 2), 4), "tta": tta,
            "pancreas_found": pancreas_found}


def select_and_export(ws: WorkflowSettings, out: Path, stage1_trainer: str, trainers: list[str],
                      budget: dict | None = None) -> dict:
    """Select each lesion trainer's checkpoint, score it on the held-out phantoms, export the best to `out`."""
    stage1 = model_folder(ws, 1, stage1_trainer)
    stage2_raw = next(ws.raw.glob(f"Dataset{ws.datasets.stage2:03d}_*"))
    splits = next(ws.preprocessed.glob(f"Dataset{ws.datasets.stage2:03d}_*")) / "splits_final.json"
    config = load_config()
    candidates = {}
    for trainer in trainers:
        folder = model_folder(ws, 2, trainer)
        selection = select_checkpoint(folder, 0, stage2_raw, splits, config)
        staging = export_weights(ws.work / "candidates" / trainer, ModelExport(stage1, "all", (FINAL,)),
                                 ModelExport(folder, "0", (SELECTED,)), overwrite=True)
        metrics = heldout_metrics(staging, ws.work / ws.heldout.folder)
        log.info("%s held-out: %s", trainer, metrics)
        if metrics["pancreas_found"] < MIN_PANCREAS_FOUND * metrics["cases"]:
            # The fallback box hides a failed stage 1 from AUROC/AP on phantoms: refuse to export it.
            raise ExportRefused(f"stage 1 found the pancreas in only {metrics['pancreas_found']} of "
                               f"{metrics['cases']} held-out phantoms; retrain it (more --stage1-epochs)")
        chosen = selection["selected"]
        candidates[trainer] = {"checkpoint": chosen, "validation": selection["scores"][chosen],
                               "heldout": metrics}
    best = max(candidates, key=lambda t: (candidates[t]["heldout"]["score"], candidates[t]["heldout"]["auroc"]))
    for sub in ("pancreas", "lesion"):
        if (out / sub).exists():
            shutil.rmtree(out / sub)
        shutil.copytree(ws.work / "candidates" / best / sub, out / sub)
    timings = ws.work / "training_seconds.json"
    summary = {"synthetic": True, "selected_trainer": best, "stage1_trainer": stage1_trainer,
               "candidates": candidates, "heldout_seed": ws.heldout.seed, "train_seed": ws.train.seed,
               "budget": budget or {}, "training_seconds": json.loads(timings.read_text()) if timings.exists() else {},
               "config": dataclasses.asdict(config)}
    (out / "demo_results.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "README.md").write_text(weights_readme(summary))
    write_model_card(out, demo_model_card(summary, datetime.date.today().isoformat()))
    write_manifest(out)  # last: it hashes every file in the folder
    log.info("demo weights: %s (held-out %s)", best, candidates[best]["heldout"])
    return summary


def demo_model_card(summary: dict, version: str) -> dict:
    """The model card (model.json) of the demo weights: synthetic, for testing the software only."""
    best = summary["selected_trainer"]
    h = summary["candidates"][best]["heldout"]
    budget = summary.get("budget", {})
    return {
        "name": "pdac-demo-synthetic",
        "version": version,
        "synthetic": True,
        "trained_on": (f"synthetic CECT phantoms from `pdac phantom` (train seed {summary['train_seed']}), no patient "
                       f"data; stage 1 {summary['stage1_trainer']} fold all,"
                       f" {budget.get('stage1_epochs', '?')} epochs x "
                       f"{budget.get('stage1_iterations', '?')} iterations; stage 2 {best} fold 0, "
                       f"{budget.get('stage2_epochs', '?')} x {budget.get('stage2_iterations', '?')}"),
        "heldout_metrics": {
            "data": (f"{h['cases']} synthetic phantoms of held-out seed {summary['heldout_seed']} "
                     f"({h['positives']} with PDAC); full pipeline, default configuration, picai_eval"),
            "patient_auroc": h["auroc"], "lesion_ap": h["ap"], "score": h["score"],
            "pancreas_found": h["pancreas_found"], "cases": h["cases"],
        },
        "intended_use": ("demonstrating and testing the software (training, inference, GC container) only; the "
                         "results are not meaningful on patient scans; not a medical device"),
        "license": "Apache-2.0",
    }


def weights_readme(summary: dict) -> str:
    """The human-readable record of the demo weights (synthetic results)."""
    rows = "\n".join(
        f"| `{t}` | {c['checkpoint']} | {c['validation']['score']:.3f} | {c['heldout']['auroc']:.3f} | "
        f"{c['heldout']['ap']:.3f} | {c['heldout']['score']:.3f} |"
        for t, c in summary["candidates"].items())
    best = summary["selected_trainer"]
    h = summary["candidates"][best]["heldout"]
    if len(summary["candidates"]) > 1:
        choice = (f"Selected: **`{best}`**, the best held-out score (AUROC {h['auroc']:.3f}, AP {h['ap']:.3f}).")
    else:
        choice = (f"Only `{best}` was trained for the demo: a second candidate would not fit the 60-minute "
                  "budget (`--trainers` adds candidates, about 40 min each); `pdac study` compares all the losses "
                  "on held-out phantoms.")
    choice += """

Why Tversky + CE for the demo lesion model: pure Tversky loss tends to drive the lesion probability to 0 or 1
(saturated outputs), which leaves few distinct likelihood values to rank patients by and can hurt AUROC;
the added cross-entropy keeps the outputs graded while the FP-heavy Tversky term (fp_weight 0.7, fn_weight
0.3) penalises false positives. The `_Adam1en3` suffix: nnU-Net's AdamW (lr 1e-3) instead of SGD, because
within a CPU budget of a few thousand iterations SGD had not found the lesion class (see the README). Stage 1
uses nnU-Net's own `nnUNetTrainerAdam1en3` for the same reason: with SGD, its 1,500 iterations gave pancreas
pseudo-Dice 0.88 in one run and 0.00 in the next."""
    extra = summary["candidates"][best].get("heldout_tta_on")
    if extra:
        choice = (f"With stage-2 mirroring TTA on (the default on CUDA), the same held-out phantoms give AUROC "
                  f"{extra['auroc']:.3f}, AP {extra['ap']:.3f}.\n\n") + choice
    b = summary.get("budget") or {}
    budget = (f"Budget: stage 1 {b['stage1_epochs']} epochs x {b['stage1_iterations']} iterations, stage 2 "
              f"{b['stage2_epochs']} epochs x {b['stage2_iterations']} iterations" if b else "")
    secs = summary.get("training_seconds") or {}
    if secs:
        budget += " (measured training time on this machine: " + ", ".join(
            f"{k} {v / 60:.0f} min" for k, v in secs.items()) + ")"
    return f"""# Demo weights (synthetic)

Trained on the CPU by `make demo-weights` from synthetic phantoms (train seed {summary['train_seed']});
**not** trained on patient data and not for clinical use. Replace them with real weights for real scans.

- `pancreas/`: stage 1, nnU-Net `PlainConvUNet` with the tiny plans variant (`nnUNetTinyPlans`), fold `all`,
  trainer `{summary['stage1_trainer']}`; it found the pancreas in {h.get('pancreas_found', 'n/a')} of the {h['cases']}
  held-out phantoms (the export refuses a stage 1 that finds it in under {MIN_PANCREAS_FOUND:.0%}).
- `lesion/`: stage 2, nnU-Net `ResidualEncoderUNet` (ResEnc planner, tiny variant `nnUNetResEncTinyPlans`),
  fold 0, checkpoint chosen by (AUROC + AP) / 2 on the fold's validation phantoms
  (`checkpoint_best_panorama.pth`; see `lesion/fold_0/checkpoint_selection.json`).
- `model.json`: the model card (name, version, `synthetic: true`, training data, held-out metrics and
  the data they were measured on, intended use, license); it is in the manifest.
- `manifest.json`: SHA-256 of every file; checked before anything is loaded.

{budget}.

## Held-out result (synthetic)

{h['cases']} held-out phantoms ({h['positives']} with PDAC, seed {summary['heldout_seed']}), full pipeline with
the default configuration (stage-2 TTA {"on" if h.get("tta") else "off"}), picai_eval (IoU >= 0.1 on label 1),
patient AUROC from the likelihoods:

| lesion trainer | checkpoint | validation score | held-out AUROC | held-out AP | held-out score |
|---|---|---|---|---|---|
{rows}

{choice}
"""
