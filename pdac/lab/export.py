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
from pdac.lab.workflow import FINAL, ModelExport, WorkflowSettings, export_weights, init_weights, model_folder
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
               "data": training_data(ws), "stage2_init": init_description(ws),
               "stage1_init": init_description(ws, stage=1),
               "real_scans": real_scan_numbers(out),
               "budget": budget or {}, "training_seconds": json.loads(timings.read_text()) if timings.exists() else {},
               "config": dataclasses.asdict(config)}
    (out / "demo_results.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "README.md").write_text(weights_readme(summary))
    write_model_card(out, demo_model_card(summary, datetime.date.today().isoformat()))
    write_manifest(out)  # last: it hashes every file in the folder
    log.info("demo weights: %s (held-out %s)", best, candidates[best]["heldout"])
    return summary


def training_data(ws: WorkflowSettings) -> dict:
    """What the training and held-out sets were made from: the generator, and for label maps the patients per
    source and split and each source's licence (from the sets' truth.json)."""
    train = json.loads((ws.work / ws.train.folder / "truth.json").read_text())
    if train.get("generator") != "labelmaps":
        return {"generator": "phantoms"}
    from pdac.lab.synth.sources import SOURCES

    heldout = json.loads((ws.work / ws.heldout.folder / "truth.json").read_text())
    cases = train["cases"] + heldout["cases"]
    splits = ("train", "val", "test")
    patients = {split: sorted({c["subject"] for c in cases if c["split"] == split}) for split in splits}
    donors = {split: sorted({c["lesion"]["donor"] for c in cases if c["split"] == split and c["lesion_present"]
                             and c["lesion"].get("donor")}) for split in splits}
    used = {key.split("/")[0] for keys in (*patients.values(), *donors.values()) for key in keys}
    return {"generator": "labelmaps", "patients": {k: len(v) for k, v in patients.items()},
            "lesion_donors": {k: len(v) for k, v in donors.items()},
            "sources": {name: {"maps": train["sources"].get(name, 0), "licence": SOURCES[name].licence,
                               "citation": SOURCES[name].citation} for name in sorted(used)},
            "test_patients": patients["test"], "skipped_maps": train.get("skipped", [])}


def init_description(ws: WorkflowSettings, stage: int = 2) -> str | None:
    """Which model a stage started from, by its weights folder's model card (name, version, training data)."""
    folder = init_weights(ws, stage)
    if folder is None:
        return None
    card = json.loads((folder / "model.json").read_text())
    return f"{card['name']} {card['version']} ({card['trained_on'].split(';')[0]})"


def real_scan_numbers(weights: Path) -> list[dict]:
    """Stage 1 of the exported weights on the bundled real scans (pdac.lab.real_scans), for the record."""
    from pdac.lab.real_scans import run

    return run(str(weights))


def demo_model_card(summary: dict, version: str) -> dict:
    """The model card (model.json) of the demo weights: synthetic, for testing the software only."""
    best = summary["selected_trainer"]
    h = summary["candidates"][best]["heldout"]
    budget = summary.get("budget", {})
    return {
        "name": "pdac-demo-synthetic",
        "version": version,
        "synthetic": True,
        "trained_on": (f"{describe_data(summary)}; stage 1 {summary['stage1_trainer']} fold all,"
                       f" {_epochs(budget)} epochs x "
                       f"{budget.get('stage1_iterations', '?')} iterations"
                       + (f", starting from the pancreas model of {summary['stage1_init']}"
                          if summary.get("stage1_init") else "")
                       + f"; stage 2 {best} fold 0, "
                       f"{budget.get('stage2_epochs', '?')} x {budget.get('stage2_iterations', '?')}"
                       + (f", starting from the lesion model of {summary['stage2_init']}"
                          if summary.get("stage2_init") else "")),
        "heldout_metrics": {
            "data": (f"{h['cases']} synthetic volumes of held-out seed {summary['heldout_seed']} "
                     f"({h['positives']} with PDAC){heldout_from(summary)}; full pipeline, default configuration, "
                     "picai_eval"),
            "patient_auroc": h["auroc"], "lesion_ap": h["ap"], "score": h["score"],
            "pancreas_found": h["pancreas_found"], "cases": h["cases"],
            "real_scans_stage1": [{k: r[k] for k in ("name", "dice", "centroid_distance_mm",
                                                    "crop_contains_reference", "plausible")}
                                  for r in summary.get("real_scans", [])],
        },
        "intended_use": ("demonstrating and testing the software (training, inference, GC container) only; the "
                         "results are not meaningful on patient scans; not a medical device"),
        "license": weights_licence(summary),
    }


def _epochs(budget: dict) -> str:
    """Stage 1's epochs, with the budgets it was continued through ("60, continued to 90")."""
    schedule = budget.get("stage1_schedule") or [budget.get("stage1_epochs", "?")]
    return ", continued to ".join(str(e) for e in schedule)


def describe_data(summary: dict) -> str:
    data = summary.get("data", {"generator": "phantoms"})
    if data["generator"] != "labelmaps":
        return f"synthetic CECT phantoms from `pdac phantom` (train seed {summary['train_seed']}), no patient data"
    sources = ", ".join(f"{name} {s['maps']}" for name, s in data["sources"].items())
    p, d = data["patients"], data["lesion_donors"]
    return (f"synthetic images from real anatomy: CT painted by `pdac synth` (train seed {summary['train_seed']}) "
            f"from real patients' label maps ({p['train']} training and {p['val']} validation patients; maps per "
            f"source: {sources}) with hand-drawn PANORAMA PDAC transplanted from {d['train'] + d['val']} patients; "
            "no patient images")


def heldout_from(summary: dict) -> str:
    data = summary.get("data", {"generator": "phantoms"})
    if data["generator"] != "labelmaps":
        return ""
    return f", painted from {data['patients']['test']} held-out test patients' label maps"


def weights_licence(summary: dict) -> str:
    data = summary.get("data", {"generator": "phantoms"})
    if data["generator"] != "labelmaps":
        return "Apache-2.0"
    licences = "; ".join(f"{name}: {s['licence']}" for name, s in data["sources"].items())
    return (f"Apache-2.0 for the code; the weights were trained on data derived from label maps under these "
            f"licences ({licences}): research and non-commercial use only")


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
    budget = (f"Budget: stage 1 {_epochs(b)} epochs x {b['stage1_iterations']} iterations, stage 2 "
              f"{b['stage2_epochs']} epochs x {b['stage2_iterations']} iterations" if b else "")
    if summary.get("stage1_init"):
        budget += f". Stage 1 was fine-tuned from the pancreas model (and plans) of {summary['stage1_init']}"
    if summary.get("stage2_init"):
        budget += (f". Stage 2 started from the lesion model of {summary['stage2_init']} instead of random weights "
                   "(from random weights, 150 epochs on these volumes never found the lesion class)")
    secs = summary.get("training_seconds") or {}
    if secs:
        budget += " (measured training time on this machine: " + ", ".join(
            f"{k} {v / 60:.0f} min" for k, v in secs.items()) + ")"
    real = summary.get("real_scans") or []
    real_rows = "\n".join(
        f"| {r['name']} | {r['dice']:.3f} | {r['centroid_distance_mm']} | {str(r['crop_contains_reference']).lower()} "
        f"| {r['reference_ml']} | {r['stage1_ml']} | {str(r['plausible']).lower()} |" for r in real)
    real_section = f"""

## Stage 1 on real scans

`pdac real-scan --weights <this folder>`: the stage-1 pancreas on the two bundled real scans
(`tests/data/real-ct`) against TotalSegmentator's predictions (used to measure, never to train). Goals: crop holds
the whole reference pancreas, centroid within 15 mm, Dice >= 0.5 on `example_ct`, plausibility check silent.

| scan | Dice | centroid distance (mm) | crop holds reference | reference mL | stage-1 mL | plausible |
|---|---|---|---|---|---|---|
{real_rows}
""" if real else ""
    return f"""# Demo weights (synthetic)

Trained on the CPU by `make demo-weights` from {describe_data(summary)};
**not** trained on patient images and not for clinical use. Replace them with real weights for real scans.
Licence: {weights_licence(summary)}.

- `pancreas/`: stage 1, nnU-Net `PlainConvUNet` with the tiny plans variant (`nnUNetTinyPlans`), fold `all`,
  trainer `{summary['stage1_trainer']}`; it found the pancreas in {h.get('pancreas_found', 'n/a')} of the {h['cases']}
  held-out volumes (the export refuses a stage 1 that finds it in under {MIN_PANCREAS_FOUND:.0%}).
- `lesion/`: stage 2, nnU-Net `ResidualEncoderUNet` (ResEnc planner, tiny variant `nnUNetResEncTinyPlans`),
  fold 0, checkpoint chosen by (AUROC + AP) / 2 on the fold's validation volumes
  (`checkpoint_best_panorama.pth`; see `lesion/fold_0/checkpoint_selection.json`).
- `model.json`: the model card (name, version, `synthetic: true`, training data, held-out metrics and
  the data they were measured on, intended use, license); it is in the manifest.
- `manifest.json`: SHA-256 of every file; checked before anything is loaded.

{budget}.

## Held-out result (synthetic)

{h['cases']} held-out synthetic volumes ({h['positives']} with PDAC, seed {summary['heldout_seed']}\
{heldout_from(summary)}), full pipeline with
the default configuration (stage-2 TTA {"on" if h.get("tta") else "off"}), picai_eval (IoU >= 0.1 on label 1),
patient AUROC from the likelihoods:

| lesion trainer | checkpoint | validation score | held-out AUROC | held-out AP | held-out score |
|---|---|---|---|---|---|
{rows}

{choice}
{real_section}"""
