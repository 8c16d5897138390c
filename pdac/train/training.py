"""Planning and training with nnU-Net's own machinery (in-process), plus a tiny-network plans variant.

`plan()` runs nnU-Net's fingerprinting, planner and preprocessing. `tiny_plans()` derives a plans
file with the same architecture class but few features, so demo training fits on 2 CPU cores.
`train()` is nnU-Net's run_training path with an optional epoch budget and numbered snapshots
(`checkpoint_epochNNNN.pth`) for checkpoint selection; nnU-Net finds our trainers through
`nnUNet_extTrainer`.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from pathlib import Path

from pdac.errors import InputError, UsageError
from pdac.safe_read import read_json
from pdac.train.trainers import trainers_path

log = logging.getLogger(__name__)

# Documented tiny variant: per-stage features and one block/conv per stage (same network class).
TINY_FEATURES = (8, 16, 32, 48, 64, 64, 64, 64)


def ensure_ext_trainer_path() -> None:
    """Make nnU-Net see this project's trainers (keeps any paths the user already set)."""
    ours = trainers_path()
    current = os.environ.get("nnUNet_extTrainer", "")
    if ours not in current.split(os.pathsep):
        os.environ["nnUNet_extTrainer"] = os.pathsep.join(p for p in (current, ours) if p)


def plan(dataset_id: int, planner: str = "nnUNetPlannerResEncM", num_processes: int = 2) -> str:
    """Fingerprint + plan a raw dataset; returns the plans identifier the planner wrote."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, plan_experiments

    extract_fingerprints([dataset_id], num_processes=num_processes, check_dataset_integrity=False,
                         verbose=False, show_progress_bar=False)
    return plan_experiments([dataset_id], planner)


def preprocess(dataset_id: int, plans_identifier: str, num_processes: int = 2) -> None:
    from nnunetv2.experiment_planning.plan_and_preprocess_api import preprocess as nnunet_preprocess

    nnunet_preprocess([dataset_id], plans_identifier, configurations=("3d_fullres",),
                      num_processes=(num_processes,), verbose=False, show_progress_bar=False)


def shrink_plans(plans: dict, plans_name: str, configuration: str = "3d_fullres",
                 features: tuple[int, ...] = TINY_FEATURES, patch_size: list[int] | None = None,
                 batch_size: int = 2) -> dict:
    """A copy of `plans` whose network keeps its class and depth but has few features and one
    block (encoder) / one conv (decoder) per stage. Pure function."""
    plans = copy.deepcopy(plans)
    plans["plans_name"] = plans_name
    cfg = plans["configurations"][configuration]
    kwargs = cfg["architecture"]["arch_kwargs"]
    n = kwargs["n_stages"]
    kwargs["features_per_stage"] = list(features[:n]) + [features[-1]] * max(0, n - len(features))
    for key in ("n_blocks_per_stage", "n_conv_per_stage"):
        if key in kwargs:
            kwargs[key] = [1] * n
    kwargs["n_conv_per_stage_decoder"] = [1] * (n - 1)
    if patch_size is not None:
        cfg["patch_size"] = list(patch_size)
    cfg["batch_size"] = batch_size
    return plans


def tiny_plans(preprocessed_dataset_dir: Path, source_plans: str, plans_name: str, **kwargs) -> str:
    src = read_json(Path(preprocessed_dataset_dir) / f"{source_plans}.json", InputError)
    tiny = shrink_plans(src, plans_name, **kwargs)
    (Path(preprocessed_dataset_dir) / f"{plans_name}.json").write_text(json.dumps(tiny, indent=2))
    return plans_name


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch in this process (nnU-Net does not fix seeds itself)."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _with_snapshots(trainer_cls, every: int):
    """Same-named subclass that also keeps a numbered checkpoint every `every` epochs."""

    def on_epoch_end(self):
        epoch = self.current_epoch
        trainer_cls.on_epoch_end(self)  # logs the epoch, then advances current_epoch
        if every and (epoch + 1) % every == 0 and self.local_rank == 0:
            # saved as nnU-Net saves checkpoint_latest, with the finished epoch's counter (it records counter + 1,
            # the epoch to resume at), so that a resumed run neither repeats nor skips an epoch
            self.current_epoch = epoch
            try:
                self.save_checkpoint(os.path.join(self.output_folder, f"checkpoint_epoch{epoch + 1:04d}.pth"))
            finally:
                self.current_epoch = epoch + 1

    return type(trainer_cls.__name__, (trainer_cls,), {"on_epoch_end": on_epoch_end})


def train_multi_gpu(dataset: str, fold: str | int, trainer: str, plans: str, num_gpus: int,
                    configuration: str = "3d_fullres", continue_training: bool = False,
                    pretrained: str | None = None) -> None:
    """Hand one fold over to nnU-Net's own multi-GPU (DDP) training: one process per GPU, the trainer built
    by name in each, so the per-run budget options of `train()` do not apply (use a trainer variant)."""
    ensure_ext_trainer_path()
    import torch
    from nnunetv2.run import run_training as nnunet_run

    from pdac.errors import UsageError

    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if num_gpus > available:
        raise UsageError(f"--num-gpus {num_gpus}: only {available} CUDA device(s) visible")
    fold = fold if fold == "all" else int(fold)
    nnunet_run.run_training(str(dataset), configuration, fold, trainer, plans, pretrained_weights=pretrained,
                            num_gpus=num_gpus, continue_training=continue_training, device=torch.device("cuda"))


NNUNET_FOLDS = 5  # nnU-Net's default split: 5-fold cross-validation (sklearn KFold)


def check_enough_cases(folder: Path, dataset_json: dict, fold: str | int) -> None:
    """Refuse in one line what nnU-Net's own split would end in a scikit-learn traceback: fewer training cases
    than folds (or a fold beyond them), when no splits_final.json fixes the split."""
    if fold == "all" or (folder / "splits_final.json").exists():
        return
    n = dataset_json.get("numTraining")
    if isinstance(n, int) and n < NNUNET_FOLDS:
        raise UsageError(f"{folder.name}: {n} training case(s), fewer than nnU-Net's {NNUNET_FOLDS} folds; train "
                         "fold 'all' (every case, no validation split) or add cases")
    if not 0 <= int(fold) < NNUNET_FOLDS:
        raise UsageError(f"fold {fold}: nnU-Net's split has folds 0..{NNUNET_FOLDS - 1} (or 'all')")


def resume_point(fold_dir: Path) -> Path | None:
    """The checkpoint a resumed run continues from: the final one (a raised epoch budget), else the newest of
    nnU-Net's checkpoint_latest and our numbered snapshots (an interrupted run; nnU-Net alone would fall back to
    checkpoint_best, an older epoch, whenever snapshots were kept more often than its save_every), else best."""
    if (fold_dir / "checkpoint_final.pth").is_file():
        return fold_dir / "checkpoint_final.pth"
    found = [p for pattern in ("checkpoint_latest.pth", "checkpoint_epoch*.pth") for p in fold_dir.glob(pattern)]
    if found:
        return max(found, key=lambda p: p.stat().st_mtime)
    best = fold_dir / "checkpoint_best.pth"
    return best if best.is_file() else None


def train(dataset: str, fold: str | int, trainer: str, plans: str, configuration: str = "3d_fullres",
          epochs: int | None = None, iterations: int | None = None, val_iterations: int | None = None,
          snapshot_every: int = 0, device: str = "cpu", validate: bool = True, continue_training: bool = False,
          pretrained: str | None = None) -> Path:
    """Train one fold; returns the fold's output folder."""
    if continue_training and pretrained:
        raise UsageError("resuming a run and a warm start exclude each other: a resumed run keeps its own weights")
    ensure_ext_trainer_path()
    import torch
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    fold = fold if fold == "all" else int(fold)
    trainer_cls = recursive_find_trainer_class_by_name(trainer)
    if snapshot_every:
        trainer_cls = _with_snapshots(trainer_cls, snapshot_every)
    folder = Path(nnUNet_preprocessed.require()) / maybe_convert_to_dataset_name(dataset)
    plans_dict = read_json(folder / f"{plans}.json", InputError)
    plans_dict["continue_training"] = continue_training
    dataset_json = read_json(folder / "dataset.json", InputError)
    check_enough_cases(folder, dataset_json, fold)
    t = trainer_cls(plans=plans_dict, configuration=configuration, fold=fold, dataset_json=dataset_json,
                    device=torch.device(device))
    if epochs:
        t.num_epochs = epochs
    if iterations:
        t.num_iterations_per_epoch = iterations
    if val_iterations:
        t.num_val_iterations_per_epoch = val_iterations
    if snapshot_every:
        t.save_every = max(t.save_every, snapshot_every)
    if continue_training:
        point = resume_point(Path(t.output_folder))
        if point is None:
            log.warning("nothing to resume in %s: starting a new training", t.output_folder)
        else:
            t.load_checkpoint(str(point))
            log.info("resuming from %s at epoch %d", point.name, t.current_epoch)
    if pretrained:  # warm start (nnU-Net's own loader), with a fresh optimiser and schedule
        from nnunetv2.run.load_pretrained_weights import load_pretrained_weights

        t.initialize()
        load_pretrained_weights(t.network, pretrained, verbose=False)
    t.run_training()
    if validate:
        t.perform_actual_validation(False)
    return Path(t.output_folder)
