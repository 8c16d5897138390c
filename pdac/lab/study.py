"""`pdac study`: does weighting false positives more than false negatives (Tversky fp 0.7 / fn 0.3) cut false
positives, against the symmetric controls (soft Dice; nnU-Net's Dice + CE)? Pre-registered: docs/study/PROTOCOL.md.

One run = one arm (loss) x one training seed: the stage-2 lesion model trained with identical data, fold and
budget into its own results folder, the full detection pipeline (a shared stage-1 pancreas model) on held-out
cases, the per-case scores written to `<out>/runs/<arm>__seed<k>.json` as soon as the run finishes. Runs
already recorded are skipped, so the study resumes; `max_minutes` stops cleanly between runs. The report
(pdac.lab.study_report) is then written from the run records alone.

Synthetic by default (a discriminative phantom benchmark: hard negatives in most cases); `--images/--labels`
runs the same protocol on real PANORAMA data.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from pdac.config import load_config
from pdac.errors import UsageError
from pdac.lab import workflow
from pdac.lab.study_stats import PRIMARY_CI_LEVEL
from pdac.lab.workflow import STUDY_DATASETS, Budget, ModelExport, Phantoms, WorkflowSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Arm:
    key: str  # --arms, file names
    name: str
    trainer: str  # nnU-Net's SGD
    adam_trainer: str  # the same loss with AdamW, lr 1e-3 (pdac/train/trainers/tversky_trainers.py)

    def trainer_for(self, optimizer: str) -> str:
        return self.adam_trainer if optimizer == "adam" else self.trainer


ARMS = (  # CE first: the reference of the exploratory comparison
    Arm("ce", "CE", "nnUNetTrainerCELoss", "nnUNetTrainerCELoss_Adam1en3"),
    Arm("dice", "Dice (Tversky 0.5/0.5)", "nnUNetTrainerTverskyLossSymmetric",
        "nnUNetTrainerTverskyLossSymmetric_Adam1en3"),
    Arm("tversky-fp", "Tversky FP-heavy (fp 0.7, fn 0.3)", "nnUNetTrainerTverskyLoss",
        "nnUNetTrainerTverskyLoss_Adam1en3"),
    Arm("tversky-fn", "Tversky FN-heavy (fp 0.3, fn 0.7)", "nnUNetTrainerTverskyLossFNHeavy",
        "nnUNetTrainerTverskyLossFNHeavy_Adam1en3"),
    Arm("focal-tversky", "Focal Tversky", "nnUNetTrainerFocalTverskyLoss", "nnUNetTrainerFocalTverskyLoss_Adam1en3"),
    Arm("dice-ce", "Dice + CE (nnU-Net default)", "nnUNetTrainer", "nnUNetTrainerAdam1en3"),
    Arm("tversky-ce", "Tversky + CE", "nnUNetTrainerTverskyCELoss", "nnUNetTrainerTverskyCELoss_Adam1en3"),
)
ARM = {a.key: a for a in ARMS}


@dataclass(frozen=True)
class Hypothesis:
    key: str
    treatment: str  # arm keys
    control: str
    statement: str


HYPOTHESES = (
    Hypothesis("H1", "tversky-fp", "dice", "Tversky FP-heavy: fewer FP/case than Dice"),
    Hypothesis("H2", "tversky-ce", "dice-ce", "Tversky + CE: fewer FP/case than Dice + CE"),
)
DECISIVE = tuple(dict.fromkeys(a for h in HYPOTHESES for a in (h.control, h.treatment)))


def discriminative_spec():
    """The study's benchmark: hard negatives (cyst, focal fat, dilated duct) in most cases, 0.6 each against the
    demo's 0.35. Its masses are no smaller or subtler than the demo's: subtler ones (8-30 mm, 12-50 HU) were not
    learned at all within the CPU budget of 2,800 iterations per arm (see StudySettings)."""
    from pdac.lab.phantom import PhantomSpec

    return PhantomSpec(lesion_diameter_mm=(15.0, 40.0), lesion_contrast_hu=(25.0, 55.0),
                       hard_negative_probability=0.6)


@dataclass(frozen=True)
class StudySettings:
    n_train: int = 60
    n_test: int = 40
    train_seed: int = 101
    test_seed: int = 202
    seeds: tuple[int, ...] = (1, 2, 3)  # training seeds (Python, numpy, torch)
    arms: tuple[str, ...] = tuple(ARM)
    single_seed_arms: tuple[str, ...] = ("ce", "tversky-fn", "focal-tversky")  # run only the first seed
    # 2,800 AdamW iterations per run (18-21 min on 2 cores, measured in the one-seed study): the demo lesion model
    # needed ~1,000 to find PDAC at all; the Tversky losses passed 0.1 pseudo-Dice by ~600, Tversky + CE by ~1,500.
    epochs: int = 70
    iterations: int = 40
    fold: int = 0
    patch_size: tuple[int, int, int] | None = (24, 48, 96)
    tta: bool = False  # identical for every arm; mirroring would multiply the test-set time by 8
    optimizer: str = "adam"
    device: str = "cpu"  # training and detection
    curve_every: int = 10  # epochs between the snapshots of each arm's first seed (0: no learning curves)
    curve_cases: int = 16  # held-out cases (half with PDAC) the snapshots are scored on
    n_bootstrap: int = 2000
    bootstrap_seed: int = 12345
    max_minutes: float = 135.0  # start no run that would end later than this after the start (0: no limit)
    run_minutes_estimate: float = 28.0  # a run's length before one has been measured

    @classmethod
    def quick(cls) -> StudySettings:
        """Checks the whole path (three arms, two seeds, snapshots, curves, bootstrap, report) in a few minutes;
        its numbers mean nothing."""
        return cls(n_train=8, n_test=6, epochs=2, iterations=2, seeds=(1, 2), arms=("ce", "dice", "tversky-fp"),
                   curve_every=1, curve_cases=4, n_bootstrap=200, max_minutes=0.0)

    def plan(self) -> list[tuple[Arm, int]]:
        """(arm, seed) in the order they run: the hypotheses' arms seed by seed, then the others."""
        runs = [(ARM[a], s) for a in self.arms for s in (self.seeds[:1] if a in self.single_seed_arms else self.seeds)]
        order = {a.key: i for i, a in enumerate(ARMS)}
        return sorted(runs, key=lambda r: (r[0].key not in DECISIVE, r[1], order[r[0].key]))

    def workflow(self, work: Path) -> WorkflowSettings:
        return WorkflowSettings(
            work=Path(work), datasets=STUDY_DATASETS,
            train=Phantoms("train", self.n_train, self.train_seed, previews=2),
            heldout=Phantoms("test", self.n_test, self.test_seed, previews=2),
            stage2_budget=Budget(self.epochs, self.iterations, val_iterations=max(1, self.iterations // 5)),
            spec=discriminative_spec(), case_prefix="st", stage2_patch=self.patch_size,
            training_seed=self.seeds[0], device=self.device)

    def protocol(self) -> dict:
        """What a run's result depends on: a recorded run is reused only under the same protocol."""
        keys = ("n_train", "n_test", "train_seed", "test_seed", "epochs", "iterations", "fold", "patch_size", "tta",
                "optimizer")
        return json.loads(json.dumps({k: getattr(self, k) for k in keys}))


def check_settings(s: StudySettings) -> None:
    if not s.seeds or len(set(s.seeds)) != len(s.seeds) or min(s.seeds) < 0:
        raise UsageError("--seeds: give distinct non-negative integers")
    unknown = [a for a in s.arms if a not in ARM]
    if unknown or not s.arms or len(set(s.arms)) != len(s.arms):
        raise UsageError(f"--arms: distinct arms out of {', '.join(ARM)} (got {', '.join(s.arms) or 'none'})")
    if s.max_minutes < 0:
        raise UsageError("--max-minutes must be >= 0")
    if s.epochs < 1 or s.iterations < 1 or s.curve_every < 0 or s.curve_cases < 2 or s.n_bootstrap < 1:
        raise UsageError("epochs, iterations and bootstrap resamples must be positive, at least 2 curve cases")


def _versions() -> dict:
    import importlib.metadata as md

    pkgs = ("nnunetv2", "torch", "numpy", "SimpleITK", "picai_eval", "report_guided_annotation")
    return {"python": platform.python_version(), "platform": platform.platform(),
            **{p: md.version(p) for p in pkgs}}


def _hardware(device: str) -> dict:
    import torch

    info = {"device": device, "cpu cores": os.cpu_count(), "torch threads": torch.get_num_threads()}
    if device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _weights_digest(folder: Path) -> str:
    """One SHA-256 over a model folder's checkpoints (the shared stage-1 model is part of the protocol)."""
    import hashlib

    from pdac.infer.weights import sha256

    files = {p.relative_to(folder).as_posix(): sha256(p) for p in sorted(Path(folder).rglob("*.pth"))}
    if not files:
        raise UsageError(f"{folder}: no checkpoint (*.pth); give the stage-1 model with --pancreas-weights")
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def _data(work: Path, s: StudySettings, images: Path | None, labels: Path | None) -> tuple[Path, Path, Path, Path]:
    """(train images, train labels, test images, test labels)."""
    if images is None:
        train, test = workflow.make_phantoms(s.workflow(work))
        return train / "imagesTr", train / "labelsTr", test / "imagesTr", test / "labelsTr"
    # Real data: a seeded case-level split into train and held-out test folders (links, no copies).
    from pdac.infer.io import case_id, find_images

    scans = find_images([images])
    rng = np.random.default_rng(s.test_seed)
    test_ids = {case_id(p) for p in rng.choice(scans, size=min(s.n_test, len(scans) // 5), replace=False)}
    split = {}
    for part in ("train", "test"):
        for sub in ("images", "labels"):
            (work / part / sub).mkdir(parents=True, exist_ok=True)
            split[(part, sub)] = work / part / sub
    for p in scans:
        cid = case_id(p)
        part = "test" if cid in test_ids else "train"
        label = next((labels / f"{cid}{ext}" for ext in (".nii.gz", ".mha") if (labels / f"{cid}{ext}").exists()), None)
        if label is None:
            continue
        for src, dst in ((p, split[(part, "images")] / p.name), (label, split[(part, "labels")] / label.name)):
            if not dst.exists():
                os.symlink(src.resolve(), dst)
    return split[("train", "images")], split[("train", "labels")], split[("test", "images")], split[("test", "labels")]


# ---------------------------------------------------------------------------------------------------------
# One run: train, export, detect, score, learning curve
# ---------------------------------------------------------------------------------------------------------

def run_name(arm: Arm, seed: int) -> str:
    return f"{arm.key}__seed{seed}"


def _case_scores(result) -> dict:
    """A SetResult's per-case scores (what the statistics and the report need)."""
    from pdac.evaluation.report import set_summary

    summary = set_summary(result, None)
    metrics = {k: summary[k] for k in ("num_cases", "num_positive_cases", "num_lesions", "auroc", "ap", "score",
                                       "fp_per_case", "sensitivity_at_fp_per_case", "fp_per_case_at_sensitivity",
                                       "dice_mean_positive")}
    return {"metrics": metrics, "cases": summary["cases"]}


def curve_point(epoch: int, iterations_per_epoch: int, cases: dict, subset: list[str]) -> dict:
    """FP/case and lesion sensitivity with every candidate kept, on `subset` of the scored cases."""
    lesions = [e for c in subset for e in cases[c]["lesions"]]
    found = [e[1] > 0 for e in lesions if e[0]]
    return {"epoch": epoch, "iterations": epoch * iterations_per_epoch, "cases": len(subset),
            "fp_per_case": sum(1 for e in lesions if not e[0] and e[1] > 0) / len(subset),
            "sensitivity": float(np.mean(found)) if found else None}


def curve_subset(cases: dict, n: int) -> list[str]:
    """The first n/2 cases with PDAC and the first n/2 without (sorted ids): the same for every arm."""
    positives = [c for c in sorted(cases) if cases[c]["target"]]
    negatives = [c for c in sorted(cases) if not cases[c]["target"]]
    return sorted(positives[: n - n // 2] + negatives[: n // 2])


def learning_curve(s: StudySettings, model: Path, weights: Path, test_images: Path, test_labels: Path,
                   final_cases: dict, config) -> list[dict]:
    """Each snapshot (checkpoint_epochNNNN.pth) through the full pipeline on the curve subset; the final model's
    point comes from the run's own detection."""
    import SimpleITK as sitk

    from pdac.evaluation.discovery import find_labels
    from pdac.evaluation.metrics import evaluate_arrays
    from pdac.infer.io import case_id, find_images, read_image
    from pdac.infer.pipeline import Pipeline
    from pdac.infer.weights import unverified_model_folder

    subset = curve_subset(final_cases, s.curve_cases)
    snapshots = sorted((model / f"fold_{s.fold}").glob("checkpoint_epoch*.pth"))
    points = []
    if snapshots:
        pipeline = Pipeline(config, weights=str(weights))
        label_files = find_labels(test_labels)
        scans = {case_id(p): p for p in find_images([test_images]) if case_id(p) in subset}
        labels = {c: sitk.GetArrayFromImage(read_image(label_files[c], dtype=None)) for c in scans}
        for snapshot in snapshots:
            epoch = int(snapshot.stem.removeprefix("checkpoint_epoch"))
            if epoch >= s.epochs:
                continue
            stage2 = dataclasses.replace(config.stage2, folds=(s.fold,), checkpoints=(snapshot.name,))
            pipeline.use_lesion_model(unverified_model_folder(model), stage2)
            detections, likelihoods = {}, {}
            for case, path in scans.items():
                result = pipeline.run(read_image(path), case)
                detections[case] = sitk.GetArrayFromImage(result.detection_map)
                likelihoods[case] = result.likelihood
            scored = _case_scores(evaluate_arrays(detections, labels, likelihoods, name=snapshot.name))["cases"]
            points.append(curve_point(epoch, s.iterations, scored, sorted(scored)))
    points.append(curve_point(s.epochs, s.iterations, final_cases, subset))
    return points


def run_one(s: StudySettings, ws: WorkflowSettings, arm: Arm, seed: int, curve: bool, pancreas: Path,
            test_images: Path, test_labels: Path, config) -> dict:
    from pdac.evaluation.discovery import discover
    from pdac.evaluation.metrics import evaluate_sets
    from pdac.infer.batch import detect_batch
    from pdac.infer.shards import LIKELIHOODS

    name, trainer = run_name(arm, seed), arm.trainer_for(s.optimizer)
    seconds: dict[str, float | None] = {}
    budget = dataclasses.replace(ws.stage2_budget, snapshot_every=s.curve_every if curve else 0)
    log.info("run %s: %s, training seed %d%s", name, trainer, seed, " (with learning curve)" if curve else "")
    trained = workflow.train(ws, 2, trainer, s.fold, seed=seed, results=ws.results / f"seed{seed}", budget=budget)
    seconds["train"] = trained.seconds
    weights = workflow.export_weights(ws.work / "weights" / name, ModelExport(pancreas),
                                      ModelExport(trained.folder, str(s.fold)))
    detections = ws.work / "detections" / name
    seconds["detect"] = None
    if not (detections / LIKELIHOODS).exists():
        t0 = time.time()
        detect_batch([str(test_images)], detections, config, str(weights))
        seconds["detect"] = time.time() - t0
    t0 = time.time()
    sets, labels = discover([detections], test_labels, [detections / LIKELIHOODS], [arm.name])
    scores = _case_scores(evaluate_sets(sets, labels)[0])
    seconds["evaluate"] = time.time() - t0
    curve_points = None
    if curve:
        t0 = time.time()
        curve_points = learning_curve(s, trained.folder, weights, test_images, test_labels, scores["cases"], config)
        seconds["curve"] = time.time() - t0
    return {"arm": arm.key, "name": arm.name, "trainer": trainer, "seed": seed, **scores, "curve": curve_points,
            "seconds": {k: (None if v is None else round(v)) for k, v in seconds.items()},
            "hardware": _hardware(s.device), "versions": _versions(),
            "finished": datetime.now(UTC).isoformat(timespec="seconds")}


# ---------------------------------------------------------------------------------------------------------
# The study
# ---------------------------------------------------------------------------------------------------------

def _estimate_minutes(s: StudySettings, records: list[dict], curve: bool) -> float:
    """The longest measured run of the same kind (with or without a learning curve), else the default."""
    def total(r: dict) -> float | None:
        secs = r["seconds"]
        return sum(secs.values()) / 60 if secs.get("train") and secs.get("detect") else None

    same = [t for r in records if (t := total(r)) is not None and bool(r.get("curve")) == curve]
    return max(same, default=s.run_minutes_estimate)


def _benchmark_text(benchmark: dict | None) -> str:
    if not benchmark:
        return ""
    (d0, d1), (c0, c1) = benchmark["lesion_diameter_mm"], benchmark["lesion_contrast_hu"]
    return (f"Benchmark: {benchmark['size']} phantoms; a PDAC-like mass in half of the cases, {d0:g}-{d1:g} mm "
            f"across and {c0:g}-{c1:g} HU below the parenchyma; each hard negative (cyst, focal fat, dilated duct) "
            f"with probability {benchmark['hard_negative_probability']:g} per case; noise "
            f"{benchmark['noise_hu'][0]:g}-{benchmark['noise_hu'][1]:g} HU.\n")


def recorded_runs(runs_dir: Path, plan: list[tuple[Arm, int]], protocol: dict) -> dict[str, dict]:
    """The planned runs already recorded; refuses one recorded under another protocol (it would be mixed in)."""
    records = {}
    for arm, seed in plan:
        path = runs_dir / f"{run_name(arm, seed)}.json"
        if path.exists():
            record = json.loads(path.read_text())
            if record.get("protocol") != protocol:
                raise UsageError(f"{path} was recorded under another protocol (settings, benchmark or stage-1 "
                                 "model); give another -o or move it away")
            records[run_name(arm, seed)] = record
    return records


def hypothesis_progress(plan: list[tuple[Arm, int]], records: dict) -> tuple[dict[str, bool], dict[str, str]]:
    """Per hypothesis: are all planned runs of its two arms recorded, and how many are."""
    planned = {arm.key: [s for a, s in plan if a.key == arm.key] for arm, _ in plan}
    complete, progress = {}, {}
    for h in HYPOTHESES:
        if h.treatment not in planned or h.control not in planned:
            complete[h.key], progress[h.key] = False, "arms not in this study"
            continue
        needed = [f"{arm}__seed{s}" for arm in (h.treatment, h.control) for s in planned[arm]]
        have = sum(name in records for name in needed)
        complete[h.key], progress[h.key] = have == len(needed), f"{have} of {len(needed)} runs"
    return complete, progress


def run_study(out: Path, work: Path, settings: StudySettings, pancreas_weights: Path,
              images: Path | None = None, labels: Path | None = None) -> dict:
    """Run what is not recorded yet (within `max_minutes`), then write the report from every recorded run."""
    from pdac.lab import study_report

    check_settings(settings)
    t_start = time.time()
    work, out = Path(work).resolve(), Path(out)
    runs_dir = out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    ws = settings.workflow(work)
    workflow.use_work_folder(ws)
    benchmark = dataclasses.asdict(discriminative_spec()) if images is None else None
    protocol = {**settings.protocol(), "benchmark": json.loads(json.dumps(benchmark)),
                "pancreas_weights_sha256": _weights_digest(pancreas_weights)}
    plan = settings.plan()
    records = recorded_runs(runs_dir, plan, protocol)  # before any work: refuse another protocol's runs
    train_images, train_labels, test_images, test_labels = _data(work, settings, images, labels)
    workflow.prepare_datasets(ws, train_images, train_labels)
    workflow.make_plans(ws)
    config = load_config(overrides={"stage2": {"tta": settings.tta}, "runtime": {"device": settings.device}})

    first_seed = {arm.key: min(s for a, s in plan if a.key == arm.key) for arm, _ in plan}
    done_now = 0
    for arm, seed in plan:
        if run_name(arm, seed) in records:
            continue
        curve = settings.curve_every > 0 and seed == first_seed[arm.key]
        elapsed = (time.time() - t_start) / 60
        estimate = _estimate_minutes(settings, list(records.values()), curve)
        if done_now and settings.max_minutes and elapsed + estimate > settings.max_minutes:
            log.info("stopping after %d run(s) (%.0f min): the next one (about %.0f min) would pass --max-minutes "
                     "%g; run the same command again to continue", done_now, elapsed, estimate, settings.max_minutes)
            break
        record = {**run_one(settings, ws, arm, seed, curve, pancreas_weights, test_images, test_labels, config),
                  "protocol": protocol}
        study_report.dump(runs_dir / f"{run_name(arm, seed)}.json", record)
        records[run_name(arm, seed)] = record
        done_now += 1
        log.info("recorded %s (%d of %d runs)", runs_dir / f"{run_name(arm, seed)}.json", len(records), len(plan))

    finished = [records[run_name(a, s)] for a, s in plan if run_name(a, s) in records]
    complete, progress = hypothesis_progress(plan, records)
    status = (f"complete ({len(finished)} runs)" if len(finished) == len(plan)
              else f"{len(finished)} of {len(plan)} runs finished; rerun the command to continue")
    record = {"synthetic": images is None, "settings": json.loads(json.dumps(dataclasses.asdict(settings))),
              "protocol": protocol, "benchmark": benchmark, "benchmark_text": _benchmark_text(benchmark),
              "arms": {a.key: {"name": a.name, "trainer": a.trainer_for(settings.optimizer)}
                       for a in ARMS if a.key in settings.arms},
              "plan": [run_name(a, s) for a, s in plan], "finished": [run_name(ARM[r["arm"]], r["seed"])
                                                                     for r in finished],
              "hypotheses": [dataclasses.asdict(h) for h in HYPOTHESES], "primary_ci_level": PRIMARY_CI_LEVEL,
              "status": status, "versions": _versions(), "hardware": _hardware(settings.device),
              "command": " ".join(["pdac", *sys.argv[1:]]) if sys.argv[1:2] == ["study"] else "pdac study",
              "minutes": round((time.time() - t_start) / 60, 1)}
    if finished:
        record["results"] = study_report.write_report(out, record, HYPOTHESES, {a.key: a.name for a in ARMS}, finished,
                                                      complete, progress, settings.n_bootstrap,
                                                      settings.bootstrap_seed)
    study_report.dump(out / "study.json", record)
    log.info("study: %s; report -> %s", status, out / "README.md")
    return record
