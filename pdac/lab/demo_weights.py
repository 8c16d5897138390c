"""`make demo-weights`: phantoms -> prepare -> plan -> train both stages on the CPU -> weights/.

Every step is the same code a real-data run uses (see README, "Training on PANORAMA"); only the
data (synthetic phantoms), the tiny plans and the epoch budget differ. Steps whose outputs exist
are skipped, so an interrupted run resumes. Results are synthetic.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

from pdac.config import REPO_ROOT, load_config

log = logging.getLogger("pdac.lab.demo_weights")

STAGE1_ID, STAGE2_ID = 113, 114
STAGE1_PLANS, STAGE2_PLANS = "nnUNetTinyPlans", "nnUNetResEncTinyPlans"
# The lesion trainer(s) to train and compare on the held-out phantoms; pass several with --trainers to
# let the held-out score pick (each adds about 40 minutes on 2 cores). AdamW twin: see the trainers module.
CANDIDATE_TRAINERS = ("nnUNetTrainerTverskyCELoss_Adam1en3",)
# nnU-Net's own AdamW trainer for stage 1 too: with its SGD, 60 x 25 iterations gave pancreas pseudo-Dice
# 0.88 in one run and 0.00 in the next (no pancreas found on any held-out phantom).
STAGE1_TRAINER = "nnUNetTrainerAdam1en3"
TRAINING_SEED = 12345  # fixes initialisation and sampling; CPU training still varies run to run
TRAIN_SEED, HELDOUT_SEED = 1, 2


def _env(work: Path) -> None:
    os.environ.setdefault("nnUNet_raw", str(work / "nnUNet_raw"))
    os.environ.setdefault("nnUNet_preprocessed", str(work / "nnUNet_preprocessed"))
    os.environ.setdefault("nnUNet_results", str(work / "nnUNet_results"))
    os.environ.setdefault("nnUNet_n_proc_DA", "1")
    os.environ.setdefault("nnUNet_compile", "false")


def data_and_plans(work: Path, n_train: int, n_heldout: int) -> None:
    from pdac.lab.phantom import generate_dataset
    from pdac.train import training
    from pdac.train.prepare import prepare

    if not (work / "phantoms_train" / "truth.json").exists():
        generate_dataset(work / "phantoms_train", n_train, TRAIN_SEED, previews=3, workers=2)
    if not (work / "phantoms_heldout" / "truth.json").exists():
        generate_dataset(work / "phantoms_heldout", n_heldout, HELDOUT_SEED, previews=0, workers=2)
    raw = Path(os.environ["nnUNet_raw"])
    if not any(raw.glob(f"Dataset{STAGE2_ID}_*/dataset.json")):
        prepare(work / "phantoms_train" / "imagesTr", work / "phantoms_train" / "labelsTr", raw, load_config(),
                STAGE1_ID, STAGE2_ID, workers=2)
    pre = Path(os.environ["nnUNet_preprocessed"])
    # Stage 2's patch is capped (60 x 120 x 240 mm at the phantoms' ~2.5 mm) so that one iteration
    # takes about half a second on 2 cores.
    for dataset_id, planner, tiny, patch in ((STAGE1_ID, "ExperimentPlanner", STAGE1_PLANS, None),
                                             (STAGE2_ID, "nnUNetPlannerResEncM", STAGE2_PLANS, [24, 48, 96])):
        folder = next(iter(pre.glob(f"Dataset{dataset_id}_*")), None)
        if folder is None or not (folder / f"{tiny}.json").exists():
            source = training.plan(dataset_id, planner)
            folder = next(iter(pre.glob(f"Dataset{dataset_id}_*")))
            training.tiny_plans(folder, source, tiny, patch_size=patch)
            training.preprocess(dataset_id, tiny)


def train_models(work: Path, budget: dict, trainers) -> None:
    from pdac.train import training

    results = Path(os.environ["nnUNet_results"])
    jobs = [(STAGE1_ID, "all", STAGE1_TRAINER, STAGE1_PLANS, budget["stage1_epochs"], budget["stage1_iterations"])]
    jobs += [(STAGE2_ID, 0, t, STAGE2_PLANS, budget["stage2_epochs"], budget["stage2_iterations"]) for t in trainers]
    for dataset_id, fold, trainer, plans, epochs, iterations in jobs:
        pattern = f"Dataset{dataset_id}_*/{trainer}__{plans}__3d_fullres/fold_{fold}/checkpoint_final.pth"
        done = list(results.glob(pattern))
        if done:
            log.info("already trained: %s", done[0].parent)
            continue
        t0 = time.time()
        training.seed_everything(TRAINING_SEED)
        training.train(str(dataset_id), fold, trainer, plans, epochs=epochs, iterations=iterations,
                       val_iterations=5, snapshot_every=max(1, epochs // 6), validate=False)
        seconds = time.time() - t0
        log.info("trained %s fold %s in %.0f s", trainer, fold, seconds)
        timings_file = work / "training_seconds.json"
        timings = json.loads(timings_file.read_text()) if timings_file.exists() else {}
        timings[f"{trainer} fold {fold}"] = round(seconds)
        timings_file.write_text(json.dumps(timings, indent=1))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--work", type=Path, default=REPO_ROOT / "work" / "demo")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "weights")
    p.add_argument("--n-train", type=int, default=60)
    p.add_argument("--n-heldout", type=int, default=24)
    p.add_argument("--stage1-epochs", type=int, default=60)
    p.add_argument("--stage1-iterations", type=int, default=25, help="stage-1 iterations per epoch")
    p.add_argument("--stage2-epochs", type=int, default=150)
    p.add_argument("--stage2-iterations", type=int, default=30, help="stage-2 iterations per epoch")
    p.add_argument("--trainers", nargs="+", default=list(CANDIDATE_TRAINERS))
    p.add_argument("--until", choices=["data", "train", "all"], default="all")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args.work.mkdir(parents=True, exist_ok=True)
    _env(args.work.resolve())
    data_and_plans(args.work, args.n_train, args.n_heldout)
    if args.until == "data":
        return 0
    budget = {k: getattr(args, k) for k in ("stage1_epochs", "stage1_iterations", "stage2_epochs", "stage2_iterations")}
    train_models(args.work, budget, args.trainers)
    if args.until == "train":
        return 0
    from pdac.lab.export import ExportRefused, select_and_export

    try:
        select_and_export(args.work, args.out, args.trainers, budget)
    except ExportRefused as e:
        log.error("not exported: %s", e)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
