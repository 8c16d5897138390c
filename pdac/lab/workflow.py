"""The lab's one training workflow: phantoms -> nnU-Net raw datasets -> tiny plans -> seeded training -> export.

`make demo-weights` (pdac.lab.demo_weights) and `pdac study` (pdac.lab.study) both run these steps with a
`WorkflowSettings`. Every step checks for its own output and skips when it is there, so an interrupted run
resumes where it stopped. Everything is written under the settings' work folder: `use_work_folder` points
nnU-Net's folders there (the only place in the lab that sets nnU-Net's environment).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pdac.config import load_config
from pdac.errors import UsageError
from pdac.lab.phantom import PhantomSpec
from pdac.lab.synth.paint import SynthSpec

log = logging.getLogger(__name__)

# Plans: the tiny variants of nnU-Net's planners (few features; the same network classes). Stage 2's patch is
# capped (60 x 120 x 240 mm at the phantoms' ~2.5 mm) so that one iteration takes about half a second on 2 cores.
STAGE1_PLANNER, STAGE1_PLANS = "ExperimentPlanner", "nnUNetTinyPlans"
STAGE2_PLANNER, STAGE2_PLANS = "nnUNetPlannerResEncM", "nnUNetResEncTinyPlans"
STAGE2_PATCH = (24, 48, 96)
CONFIGURATION = "3d_fullres"
FINAL = "checkpoint_final.pth"
# Written beside a finished fold: its epoch budget, so that raising the budget continues the run (nnU-Net --c).
BUDGET_RECORD = "training_budget.json"


@dataclass(frozen=True)
class DatasetIds:
    """The nnU-Net dataset ids of the two stages' raw datasets."""

    stage1: int
    stage2: int


DEMO_DATASETS = DatasetIds(113, 114)
STUDY_DATASETS = DatasetIds(213, 214)


@dataclass(frozen=True)
class Phantoms:
    """One phantom set: its folder under the work folder, size and data seed."""

    folder: str
    n: int
    seed: int
    previews: int = 0


@dataclass(frozen=True)
class Budget:
    epochs: int
    iterations: int  # per epoch
    val_iterations: int = 5
    snapshot_every: int = 0  # also keep checkpoint_epochNNNN.pth every N epochs (0: none)


@dataclass(frozen=True)
class WorkflowSettings:
    work: Path
    datasets: DatasetIds
    train: Phantoms
    heldout: Phantoms
    stage2_budget: Budget
    stage1_budget: Budget | None = None  # None: stage 1 is not planned or trained here (the study reuses one)
    spec: PhantomSpec = PhantomSpec()
    case_prefix: str = "ph"
    stage2_patch: tuple[int, int, int] | None = STAGE2_PATCH
    training_seed: int = 12345  # seeds Python, numpy and torch before each training
    workers: int = 2
    device: str = "cpu"  # for training
    # Synthetic CT painted from real label maps (pdac.lab.synth) instead of procedural phantoms: the folder of
    # label maps, and how many training volumes come from validation subjects (fold 0's validation set).
    labelmaps: Path | None = None
    n_val: int = 12
    synth_spec: SynthSpec = SynthSpec()  # how the painted volumes are drawn (e.g. only some contrast phases)
    # Stage 2 starts from the lesion model of this weights folder (verified against its manifest) instead of
    # random weights: a curriculum from easy procedural phantoms to painted real anatomy.
    stage2_init: Path | None = None
    # Stage 1 starts from the pancreas model of this weights folder (verified), with that model's plans (network,
    # patch, spacing, normalisation: nnU-Net's plan transfer for fine-tuning) instead of freshly planned ones.
    stage1_init: Path | None = None

    @property
    def raw(self) -> Path:
        return self.work / "nnUNet_raw"

    @property
    def preprocessed(self) -> Path:
        return self.work / "nnUNet_preprocessed"

    @property
    def results(self) -> Path:
        return self.work / "nnUNet_results"

    def dataset_id(self, stage: int) -> int:
        return self.datasets.stage1 if stage == 1 else self.datasets.stage2

    def plans(self, stage: int) -> str:
        return STAGE1_PLANS if stage == 1 else STAGE2_PLANS

    def budget(self, stage: int) -> Budget:
        budget = self.stage1_budget if stage == 1 else self.stage2_budget
        if budget is None:
            raise UsageError("this workflow does not train stage 1")
        return budget


def use_work_folder(s: WorkflowSettings) -> None:
    """nnU-Net's three folders inside the work folder (always: the steps look for their outputs there); one
    data-augmentation worker and no torch.compile unless the caller's environment says otherwise."""
    s.work.mkdir(parents=True, exist_ok=True)
    for var, folder in (("nnUNet_raw", s.raw), ("nnUNet_preprocessed", s.preprocessed),
                        ("nnUNet_results", s.results)):
        os.environ[var] = str(folder.resolve())
    os.environ.setdefault("nnUNet_n_proc_DA", "1")
    os.environ.setdefault("nnUNet_compile", "false")


@contextlib.contextmanager
def results_folder(folder: Path) -> Iterator[None]:
    """nnU-Net's results folder switched to `folder` for the duration (one folder per training seed)."""
    before = os.environ.get("nnUNet_results")
    os.environ["nnUNet_results"] = str(Path(folder).resolve())
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("nnUNet_results", None)
        else:
            os.environ["nnUNet_results"] = before


def make_phantoms(s: WorkflowSettings) -> tuple[Path, Path]:
    """The training and held-out sets (skipped when written); returns their folders. Refuses a work folder whose
    sets were drawn from another spec or generator: resuming would train and score on the wrong ones."""
    if s.labelmaps is not None:
        return _make_from_labelmaps(s)
    from pdac.lab.phantom import generate_dataset

    folders = []
    for phantoms in (s.train, s.heldout):
        folder = s.work / phantoms.folder
        truth = folder / "truth.json"
        if not truth.exists():
            generate_dataset(folder, phantoms.n, phantoms.seed, s.spec, previews=phantoms.previews,
                             workers=s.workers, prefix=s.case_prefix)
        elif json.loads(truth.read_text())["spec"] != json.loads(json.dumps(dataclasses.asdict(s.spec))):
            raise UsageError(f"{s.work} holds phantoms from a different benchmark ({truth}); use a new --work")
        folders.append(folder)
    return folders[0], folders[1]


def _make_from_labelmaps(s: WorkflowSettings) -> tuple[Path, Path]:
    """Training (train + validation subjects) and held-out (test subjects) sets from real label maps."""
    from pdac.lab.synth.dataset import generate_from_labelmaps, load_library

    spec = s.synth_spec
    wanted = json.loads(json.dumps(dataclasses.asdict(spec)))
    plans = ((s.train, {"train": s.train.n, "val": s.n_val}), (s.heldout, {"test": s.heldout.n}))
    library = None
    for phantoms, plan in plans:
        folder = s.work / phantoms.folder
        truth = folder / "truth.json"
        if truth.exists():
            written = json.loads(truth.read_text())
            if written.get("generator") != "labelmaps":
                raise UsageError(f"{s.work} holds procedural phantoms ({truth}); use a new --work")
            drawn = written.get("spec") or {}
            changed = sorted(_changed_keys(drawn, {k: v for k, v in wanted.items() if k != "lesion"}))
            if changed:
                raise UsageError(f"{truth}: drawn with other generator settings ({', '.join(changed[:4])}); "
                                 "use a new --work")
            continue
        library = library or load_library(s.labelmaps, workers=s.workers)
        generate_from_labelmaps(folder, library, plan, phantoms.seed, spec=spec, previews=phantoms.previews,
                                workers=s.workers, prefix=s.case_prefix)
    return s.work / s.train.folder, s.work / s.heldout.folder


def _changed_keys(drawn: dict, wanted: dict, prefix: str = "") -> list[str]:
    """Settings (dotted names) whose value in `wanted` differs from the one a set was drawn with (a setting the
    set does not record is older than it, so not compared)."""
    changed = []
    for key, value in wanted.items():
        if key not in drawn:
            continue
        if isinstance(value, dict) and isinstance(drawn[key], dict):
            changed += _changed_keys(drawn[key], value, f"{prefix}{key}.")
        elif drawn[key] != value:
            changed.append(prefix + key)
    return changed


def write_subject_splits(s: WorkflowSettings) -> None:
    """Fold 0 = training subjects vs validation subjects (never volumes of one patient on both sides), as
    nnU-Net's splits_final.json in stage 2's preprocessed folder; only for sets made from label maps."""
    truth = s.work / s.train.folder / "truth.json"
    folder = _preprocessed_folder(s, 2)
    if s.labelmaps is None or folder is None or not truth.exists():
        return
    cases = json.loads(truth.read_text())["cases"]
    split = {"train": sorted(c["case"] for c in cases if c["split"] == "train"),
             "val": sorted(c["case"] for c in cases if c["split"] == "val")}
    (folder / "splits_final.json").write_text(json.dumps([split], indent=1))


def prepare_datasets(s: WorkflowSettings, images: Path, labels: Path) -> None:
    """Scans + labels -> both stages' nnU-Net raw datasets (skipped when stage 2's exists)."""
    from pdac.train.prepare import prepare

    if not any(s.raw.glob(f"Dataset{s.datasets.stage2:03d}_*/dataset.json")):
        prepare(images, labels, s.raw, load_config(), s.datasets.stage1, s.datasets.stage2, workers=s.workers)


def _preprocessed_folder(s: WorkflowSettings, stage: int) -> Path | None:
    return next(iter(s.preprocessed.glob(f"Dataset{s.dataset_id(stage):03d}_*")), None)


def _preprocessing_done(folder: Path | None, plans: str) -> bool:
    """The tiny plans file is there and every training case has been preprocessed with it."""
    if folder is None or not (folder / f"{plans}.json").exists():
        return False
    identifier = json.loads((folder / f"{plans}.json").read_text())["configurations"][CONFIGURATION]["data_identifier"]
    expected = json.loads((folder / "dataset.json").read_text())["numTraining"]
    return len(list((folder / identifier).glob("*.pkl"))) >= expected


def make_plans(s: WorkflowSettings) -> None:
    """nnU-Net fingerprint + plan, the tiny variant, preprocessing: stage 2 always, stage 1 when trained here."""
    from pdac.train import training

    stages = [(1, STAGE1_PLANNER, None)] if s.stage1_budget is not None else []
    stages.append((2, STAGE2_PLANNER, list(s.stage2_patch) if s.stage2_patch else None))
    for stage, planner, patch in stages:
        if _preprocessing_done(_preprocessed_folder(s, stage), s.plans(stage)):
            continue
        source = training.plan(s.dataset_id(stage), planner)
        if stage == 1 and s.stage1_init is not None:
            transfer_plans(s, _preprocessed_folder(s, stage))
        else:
            training.tiny_plans(_preprocessed_folder(s, stage), source, s.plans(stage), patch_size=patch)
        training.preprocess(s.dataset_id(stage), s.plans(stage))
    write_subject_splits(s)


def model_folder(s: WorkflowSettings, stage: int, trainer: str, results: Path | None = None) -> Path | None:
    """The trained model folder (nnU-Net's layout) of a trainer, or None before its training started."""
    root = results or s.results
    return next(iter(root.glob(f"Dataset{s.dataset_id(stage):03d}_*/{trainer}__{s.plans(stage)}__{CONFIGURATION}")),
                None)


@dataclass(frozen=True)
class Trained:
    folder: Path  # the model folder (nnU-Net's trainer__plans__configuration)
    seconds: float | None  # None: found trained, skipped


def train(s: WorkflowSettings, stage: int, trainer: str, fold: int | str, seed: int | None = None,
          results: Path | None = None, budget: Budget | None = None) -> Trained:
    """Train one fold (skipped when its final checkpoint exists), seeded; `results` gives a training seed its
    own nnU-Net results folder."""
    from pdac.train import training

    results = results or s.results
    budget = budget or s.budget(stage)
    done = model_folder(s, stage, trainer, results)
    extend = False
    if done is not None and (done / f"fold_{fold}" / FINAL).exists():
        trained_epochs = _trained_epochs(done / f"fold_{fold}", budget)
        if trained_epochs is None or trained_epochs >= budget.epochs:
            log.info("already trained: %s", done / f"fold_{fold}")
            return Trained(done, None)
        log.info("continuing %s from epoch %d to %d (the budget was raised)", done / f"fold_{fold}",
                 trained_epochs, budget.epochs)
        extend = True
    elif done is not None and training.resume_point(done / f"fold_{fold}") is not None:
        log.info("resuming the interrupted run in %s", done / f"fold_{fold}")
        extend = True
    init = None if extend else init_checkpoint(s, stage)
    t0 = time.time()
    training.seed_everything(s.training_seed if seed is None else seed)
    with results_folder(results):
        fold_dir = training.train(str(s.dataset_id(stage)), fold, trainer, s.plans(stage), configuration=CONFIGURATION,
                                  epochs=budget.epochs, iterations=budget.iterations,
                                  val_iterations=budget.val_iterations, snapshot_every=budget.snapshot_every,
                                  device=s.device, validate=False, continue_training=extend,
                                  pretrained=None if init is None else str(init))
    record = fold_dir / BUDGET_RECORD
    history = json.loads(record.read_text())["history"] if extend and record.exists() else []
    (fold_dir / BUDGET_RECORD).write_text(json.dumps(
        {"epochs": budget.epochs, "iterations": budget.iterations,
         "history": history + [{"epochs": budget.epochs, "seconds": round(time.time() - t0)}]}, indent=1) + "\n")
    seconds = time.time() - t0
    log.info("trained %s fold %s in %.0f s", trainer, fold, seconds)
    return Trained(fold_dir.parent, seconds)


INIT_PREFERENCE = ("checkpoint_best_panorama.pth", "checkpoint_final.pth")
INIT_MODEL = {1: "pancreas", 2: "lesion"}


def init_weights(s: WorkflowSettings, stage: int) -> Path | None:
    """The weights folder a stage starts from, or None (random weights)."""
    return s.stage1_init if stage == 1 else s.stage2_init


def init_checkpoint(s: WorkflowSettings, stage: int = 2) -> Path | None:
    """The stage's checkpoint of its init weights folder (`stage1_init`/`stage2_init`), checked against that
    folder's manifest and copied into the work folder from the verified bytes (nnU-Net then loads that copy);
    None without one."""
    folder = init_weights(s, stage)
    if folder is None:
        return None
    from pdac.infer.weights import verify_weights

    model = verify_weights(folder).model(INIT_MODEL[stage])
    name = next((n for c in INIT_PREFERENCE for n in sorted(model.names) if n.endswith(f"/{c}")), None)
    if name is None:
        raise UsageError(f"{folder}: no {INIT_MODEL[stage]} checkpoint ({' or '.join(INIT_PREFERENCE)}) to start from")
    copy = s.work / f"stage{stage}_init.pth"
    copy.write_bytes(model.read_bytes(name))
    log.info("stage %d starts from %s", stage, folder / INIT_MODEL[stage] / name)
    return copy


def transfer_plans(s: WorkflowSettings, preprocessed: Path) -> None:
    """Stage 1's plans taken from its init model (verified bytes), renamed for this dataset: the same network,
    patch, spacing and intensity normalisation, so its weights load and see the data as they were trained."""
    from pdac.infer.weights import verify_weights

    model = verify_weights(s.stage1_init).model(INIT_MODEL[1])
    try:
        plans = json.loads(model.read_bytes("plans.json"))
    except ValueError as e:
        raise UsageError(f"{s.stage1_init}: its pancreas model has no readable plans.json ({e})") from e
    if not isinstance(plans, dict) or CONFIGURATION not in (plans.get("configurations") or {}):
        raise UsageError(f"{s.stage1_init}: its pancreas plans have no {CONFIGURATION} configuration")
    plans.update(dataset_name=preprocessed.name, plans_name=s.plans(1))
    (preprocessed / f"{s.plans(1)}.json").write_text(json.dumps(plans, indent=2))
    log.info("stage 1 uses the plans of %s", s.stage1_init / INIT_MODEL[1])


def _trained_epochs(fold_dir: Path, budget: Budget) -> int | None:
    """Epochs a finished fold was trained for, from its budget record; None (treat as done) without a record
    or when the iterations per epoch differ (a raised epoch budget continues a run, anything else does not)."""
    record = fold_dir / BUDGET_RECORD
    if not record.exists():
        return None
    done = json.loads(record.read_text())
    return int(done["epochs"]) if int(done["iterations"]) == budget.iterations else None


def record_seconds(path: Path, key: str, seconds: float) -> dict:
    """Add one step's wall time to a JSON file of timings (kept in the work folder across resumed runs; a
    continued training adds to its earlier time)."""
    timings = json.loads(path.read_text()) if path.exists() else {}
    timings[key] = timings.get(key, 0) + round(seconds)
    path.write_text(json.dumps(timings, indent=1) + "\n")
    return timings


def export_model_folder(src: Path, dst: Path, fold: str, checkpoints: list[str]) -> None:
    """Copy an nnU-Net trained-model folder, keeping only the named checkpoints, without optimizer state
    (inference needs the network weights only; this keeps the committed weights small)."""
    import torch

    if dst.exists():
        shutil.rmtree(dst)
    (dst / f"fold_{fold}").mkdir(parents=True)
    for name in ("dataset.json", "plans.json", "dataset_fingerprint.json"):
        if (src / name).exists():
            shutil.copyfile(src / name, dst / name)
    for name in checkpoints:
        ckpt = torch.load(src / f"fold_{fold}" / name, map_location="cpu", weights_only=False)
        ckpt.pop("optimizer_state", None)
        ckpt.pop("grad_scaler_state", None)
        torch.save(ckpt, dst / f"fold_{fold}" / name)
    for extra in ("checkpoint_selection.json", "progress.png"):
        if (src / f"fold_{fold}" / extra).exists():
            shutil.copyfile(src / f"fold_{fold}" / extra, dst / f"fold_{fold}" / extra)


@dataclass(frozen=True)
class ModelExport:
    """One model of a weights folder: an nnU-Net model folder, the fold and the checkpoints to keep. Without a
    fold, `source` is an exported model folder already and is copied as it is."""

    source: Path
    fold: str | None = None
    checkpoints: tuple[str, ...] = (FINAL,)


def export_weights(dst: Path, pancreas: ModelExport, lesion: ModelExport, overwrite: bool = False) -> Path:
    """A weights folder as the pipeline loads it: pancreas/, lesion/ and a manifest (skipped when its manifest
    exists, unless `overwrite`)."""
    from pdac.infer.weights import write_manifest

    if (dst / "manifest.json").exists() and not overwrite:
        return dst
    for sub, model in (("pancreas", pancreas), ("lesion", lesion)):
        if model.fold is None:
            if (dst / sub).exists():
                shutil.rmtree(dst / sub)
            shutil.copytree(model.source, dst / sub)
            (dst / sub / "manifest.json").unlink(missing_ok=True)
        else:
            export_model_folder(model.source, dst / sub, model.fold, list(model.checkpoints))
    write_manifest(dst)  # last: it hashes every file in the folder
    return dst
