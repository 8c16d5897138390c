"""`make demo-weights`: phantoms -> prepare -> plan -> train both stages on the CPU -> weights/.

Every step is the same code a real-data run uses (see README, "Training on PANORAMA"); only the
data (synthetic phantoms), the tiny plans and the epoch budget differ. The steps are the lab workflow's
(pdac.lab.workflow): those whose outputs exist are skipped, so an interrupted run resumes. Results are synthetic.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

from pdac.lab.synth.paint import SynthSpec, spec_with_phases
from pdac.lab.workflow import DEMO_DATASETS, Budget, Phantoms, WorkflowSettings

log = logging.getLogger("pdac.lab.demo_weights")

# The lesion trainer(s) to train and compare on the held-out phantoms; pass several with --trainers to
# let the held-out score pick (each adds about 40 minutes on 2 cores). AdamW twin: see the trainers module.
CANDIDATE_TRAINERS = ("nnUNetTrainerTverskyCELoss_Adam1en3",)
# nnU-Net's own AdamW trainer for stage 1 too: with its SGD, 60 x 25 iterations gave pancreas pseudo-Dice
# 0.88 in one run and 0.00 in the next (no pancreas found on any held-out phantom).
STAGE1_TRAINER = "nnUNetTrainerAdam1en3"
# Where this team's copy of the public label maps sits (docs/synthetic-data.md says where to get them).
DEFAULT_LABELMAPS = Path("..") / "shared" / "data" / "labelmaps"
TIMINGS = "training_seconds.json"


@dataclass(frozen=True)
class DemoSettings:
    work: Path = Path("work") / "demo"
    out: Path = Path("work") / "weights-labelmaps"  # compare before copying over the bundled weights/
    labelmaps: Path | None = DEFAULT_LABELMAPS  # None: the procedural phantoms (the demo weights until 2026-11-30)
    n_train: int = 60
    n_val: int = 12
    n_heldout: int = 24
    train_seed: int = 1
    heldout_seed: int = 2
    training_seed: int = 12345  # fixes initialisation and sampling; CPU training still varies run to run
    # Stage 1's epoch budgets in turn: each later one continues the finished run (nnU-Net's --c with the raised
    # budget, so the learning rate restarts at that point of the longer poly schedule).
    stage1_epochs: tuple[int, ...] = (60, 90)
    stage1_iterations: int = 25
    stage2_epochs: int = 50  # 150 from random weights on the phantoms
    stage2_iterations: int = 30
    trainers: tuple[str, ...] = field(default=CANDIDATE_TRAINERS)
    stage2_init: Path | None = None  # a weights folder whose lesion model stage 2 starts from
    stage1_init: Path | None = None  # a weights folder whose pancreas model (and plans) stage 1 starts from
    phases: tuple[str, ...] | None = None  # painted volumes: only these contrast phases (None: all)

    def budget(self) -> dict:
        return {"stage1_epochs": self.stage1_epochs[-1], "stage1_schedule": list(self.stage1_epochs),
                "stage1_iterations": self.stage1_iterations,
                "stage2_epochs": self.stage2_epochs, "stage2_iterations": self.stage2_iterations}

    def workflow(self) -> WorkflowSettings:
        def budget(epochs: int, iterations: int) -> Budget:
            return Budget(epochs, iterations, val_iterations=5, snapshot_every=max(1, epochs // 6))

        return WorkflowSettings(
            work=self.work, datasets=DEMO_DATASETS,
            train=Phantoms("synth_train" if self.labelmaps else "phantoms_train", self.n_train, self.train_seed,
                           previews=3),
            heldout=Phantoms("synth_heldout" if self.labelmaps else "phantoms_heldout", self.n_heldout,
                             self.heldout_seed),
            labelmaps=self.labelmaps, n_val=self.n_val, case_prefix="lm" if self.labelmaps else "ph",
            stage1_budget=budget(self.stage1_epochs[-1], self.stage1_iterations) if self.stage1_epochs[-1] else None,
            stage2_budget=budget(self.stage2_epochs, self.stage2_iterations),
            training_seed=self.training_seed, stage2_init=self.stage2_init, stage1_init=self.stage1_init,
            synth_spec=self.synth_spec())

    def synth_spec(self) -> SynthSpec:
        return spec_with_phases(self.phases)


def data_and_plans(ws: WorkflowSettings) -> None:
    from pdac.lab import workflow

    workflow.use_work_folder(ws)
    train, _ = workflow.make_phantoms(ws)
    workflow.prepare_datasets(ws, train / "imagesTr", train / "labelsTr")
    workflow.make_plans(ws)


def train_models(s: DemoSettings, ws: WorkflowSettings, stage1_only: bool = False) -> None:
    """Stage 1 on all training cases (fold "all"), then each candidate lesion trainer on fold 0."""
    from pdac.lab import workflow

    for epochs in (e for e in s.stage1_epochs if e > 0):
        budget = dataclasses.replace(ws.budget(1), epochs=epochs, snapshot_every=max(1, epochs // 6))
        trained = workflow.train(ws, 1, STAGE1_TRAINER, "all", budget=budget)
        if trained.seconds is not None:
            workflow.record_seconds(ws.work / TIMINGS, f"{STAGE1_TRAINER} fold all", trained.seconds)
    if stage1_only:
        return
    for stage, fold, trainer in [(2, 0, t) for t in s.trainers]:
        trained = workflow.train(ws, stage, trainer, fold)
        if trained.seconds is not None:
            workflow.record_seconds(ws.work / TIMINGS, f"{trainer} fold {fold}", trained.seconds)


def main(argv=None) -> int:
    d = DemoSettings()
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--work", type=Path, default=d.work)
    p.add_argument("--out", type=Path, default=d.out)
    p.add_argument("--labelmaps", type=Path, default=d.labelmaps,
                   help="folder of real label maps, one sub-folder per source (default: %(default)s)")
    p.add_argument("--phantoms", action="store_true", help="train on the procedural phantoms instead")
    p.add_argument("--n-train", type=int, default=d.n_train)
    p.add_argument("--n-val", type=int, default=d.n_val, help="training volumes from validation subjects")
    p.add_argument("--n-heldout", type=int, default=d.n_heldout)
    p.add_argument("--stage1-epochs", type=int, nargs="+", default=list(d.stage1_epochs),
                   help="epoch budget(s) of stage 1; each later one continues the finished run (default: "
                        "%(default)s; 0: no stage 1, with --until train)")
    p.add_argument("--stage1-iterations", type=int, default=d.stage1_iterations, help="stage-1 iterations per epoch")
    p.add_argument("--stage2-epochs", type=int, default=d.stage2_epochs)
    p.add_argument("--stage2-iterations", type=int, default=d.stage2_iterations, help="stage-2 iterations per epoch")
    p.add_argument("--trainers", nargs="+", default=list(d.trainers))
    p.add_argument("--stage2-init", type=Path, help="start stage 2 from this weights folder's lesion model "
                   "(checked against its manifest), e.g. phantom-trained weights")
    p.add_argument("--stage1-init", type=Path, help="start stage 1 from this weights folder's pancreas model and "
                   "its plans (checked against its manifest): fine-tuning instead of training from random weights")
    p.add_argument("--phases", nargs="+", metavar="PHASE",
                   help="painted volumes: only these contrast phases (venous, pancreatic, non-contrast, delayed)")
    p.add_argument("--until", choices=["data", "stage1", "train", "all"], default="all",
                   help="stop after this step (stage1: train stage 1 only)")
    args = p.parse_args(argv)
    if args.stage1_epochs[-1] == 0 and args.until != "train":
        p.error("--stage1-epochs 0 trains stage 2 alone: add --until train")
    try:
        spec_with_phases(tuple(args.phases or ()))
    except ValueError as e:
        p.error(f"--phases: {e}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    s = DemoSettings(work=args.work, out=args.out, labelmaps=None if args.phantoms else args.labelmaps,
                     n_train=args.n_train, n_val=args.n_val, n_heldout=args.n_heldout,
                     stage1_epochs=tuple(args.stage1_epochs), stage1_iterations=args.stage1_iterations,
                     stage2_epochs=args.stage2_epochs, stage2_iterations=args.stage2_iterations,
                     trainers=tuple(args.trainers), stage2_init=args.stage2_init, stage1_init=args.stage1_init,
                     phases=tuple(args.phases) if args.phases else None)
    ws = s.workflow()
    data_and_plans(ws)
    if args.until == "data":
        return 0
    train_models(s, ws, stage1_only=args.until == "stage1")
    if args.until in ("stage1", "train"):
        return 0
    from pdac.lab.export import ExportRefused, select_and_export

    try:
        select_and_export(ws, s.out, STAGE1_TRAINER, list(s.trainers), s.budget())
    except ExportRefused as e:
        log.error("not exported: %s", e)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
