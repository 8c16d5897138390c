"""The lab's command-line entries that `pdac` mounts: `pdac phantom` (procedural phantoms), `pdac synth`
(synthetic CT from real label maps), `pdac real-scan` (where stage 1 puts the pancreas on real scans),
`pdac bench` and `pdac study`."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from pdac.errors import UsageError


def workers_count(text: str) -> int:
    """argparse type of --workers: 1 to 256 processes (argparse refuses anything else, exit 2)."""
    if not text.strip().isdecimal() or not 1 <= int(text) <= 256:
        raise argparse.ArgumentTypeError(f"expected 1 to 256 processes, got {text!r}")
    return int(text)


def add_synth_parser(sub) -> None:
    sy = sub.add_parser("synth", help="synthetic CT painted from real label maps (WORD, TotalSegmentator, AMOS, "
                                      "PanTS, AbdomenAtlas, PANORAMA), PANORAMA labels 0-6")
    sy.add_argument("--labelmaps", required=True, type=Path,
                    help="folder with one sub-folder per source (word/, totalsegmentator_dataset/, amos/, pants/, "
                         "abdomenatlas/, panorama/); see docs/synthetic-data.md")
    sy.add_argument("-o", "--output", required=True, type=Path, help="output folder")
    sy.add_argument("-n", type=int, default=10, help="volumes to write")
    sy.add_argument("--split", choices=["train", "val", "test"], default="train",
                    help="draw subjects and lesion donors from this split of patients (by hash of the patient)")
    sy.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sy.add_argument("--positive-fraction", type=float, default=0.5, help="share of volumes with a PDAC (0-1)")
    sy.add_argument("--sources", nargs="+", help="only these sources (default: every one found)")
    sy.add_argument("--phases", nargs="+", metavar="PHASE",
                    help="draw only these contrast phases (venous, pancreatic, non-contrast, delayed; default: all, "
                         "mostly venous)")
    sy.add_argument("--strict", action="store_true", help="stop at the first map that cannot be used")
    sy.add_argument("--previews", type=int, default=3, help="write PNG previews of the first N volumes")
    sy.add_argument("--workers", type=workers_count, default=1, help="parallel processes (default 1)")
    sy.set_defaults(func=cmd_synth)


def cmd_synth(args) -> int:
    from pdac.lab.synth.dataset import generate_from_labelmaps, load_library

    if args.n < 1:
        raise UsageError("-n must be at least 1")
    if not 0 <= args.positive_fraction <= 1:
        raise UsageError("--positive-fraction must be in [0, 1]")
    if not args.labelmaps.is_dir():
        raise UsageError(f"--labelmaps {args.labelmaps}: not a folder")
    spec = synth_spec(args.phases)
    library = load_library(args.labelmaps, args.sources, strict=args.strict, workers=args.workers)
    generate_from_labelmaps(args.output, library, {args.split: args.n}, args.seed, spec=spec,
                            positive_fraction=args.positive_fraction, previews=args.previews, workers=args.workers)
    return 0


def synth_spec(phases: list[str] | None):
    """The generator's settings for the command line's choices (a bad phase name: one line, exit 2)."""
    from pdac.lab.synth.paint import spec_with_phases

    try:
        return spec_with_phases(tuple(phases or ()))
    except ValueError as e:
        raise UsageError(f"--phases: {e}") from e


def add_real_scan_parser(sub) -> None:
    rs = sub.add_parser("real-scan", help="stage 1 on real scans vs reference masks: Dice, centroid distance, "
                                          "whether the stage-2 crop holds the whole pancreas")
    rs.add_argument("--weights", help="weights folder (default: $PDAC_WEIGHTS, /opt/ml/model, ./weights)")
    rs.add_argument("--scan", type=Path, help="a scan of yours (file or DICOM folder) instead of the bundled two")
    rs.add_argument("--reference", type=Path, help="its reference label map (needed with --scan)")
    rs.add_argument("--label", type=int, default=7, help="the reference's pancreas value (TotalSegmentator: 7)")
    rs.add_argument("--json", type=Path, help="also write the numbers here")
    rs.set_defaults(func=cmd_real_scan)


def cmd_real_scan(args) -> int:
    from pdac.lab.real_scans import BUNDLED, RealScan, run

    if (args.scan is None) != (args.reference is None):
        raise UsageError("--scan and --reference go together")
    cases = BUNDLED if args.scan is None else (RealScan(args.scan.name, args.scan, args.reference, args.label),)
    run(args.weights, cases, args.json)
    return 0


def add_phantom_parser(sub) -> None:
    ph = sub.add_parser("phantom", help="generate synthetic CECT phantoms with PANORAMA labels")
    ph.add_argument("-o", "--output", required=True, help="output folder")
    ph.add_argument("-n", type=int, default=10, help="phantoms to write (default 10)")
    ph.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    ph.add_argument("--size", choices=["small", "full", "large"], default="small",
                    help="small: ~2-3 mm voxels; full: 512 x 512 x 100-300; large: 512 x 512 x 400")
    ph.add_argument("--positive-fraction", type=float, default=0.5, help="share of phantoms with a PDAC (0-1)")
    ph.add_argument("--orientation", choices=["random", "identity", "flipped", "oblique"], default="random",
                    help="direction matrix of the scans (default: a random mix)")
    ph.add_argument("--previews", type=int, default=3, help="write PNG previews of the first N cases")
    ph.add_argument("--workers", type=workers_count, default=1, help="parallel processes (default 1)")
    ph.set_defaults(func=cmd_phantom)


def cmd_phantom(args) -> int:
    from pdac.lab.phantom import PhantomSpec, generate_dataset

    if args.n < 1:
        raise UsageError("-n must be at least 1")
    if not 0 <= args.positive_fraction <= 1:
        raise UsageError("--positive-fraction must be in [0, 1]")
    spec = PhantomSpec(size=args.size, orientation=args.orientation)
    generate_dataset(Path(args.output), args.n, args.seed, spec, args.positive_fraction, previews=args.previews,
                     workers=args.workers)
    return 0


def add_bench_parser(sub) -> None:
    b = sub.add_parser("bench", help="time our pipeline (fp32 and bf16) vs a baseline-style reference vs the network "
                       "alone; or, with --precision-equivalence, compare fp32 and bf16 results")
    b.add_argument("--sizes", nargs="+", choices=["small", "full", "large"],
                   help="phantom sizes (default: small full; large = 512 x 512 x 400, the memory target)")
    b.add_argument("--runs", type=int, default=3, help="runs per variant (medians are reported)")
    b.add_argument("--real-plans", action="store_true",
                   help="random-weight models from the official baseline's real plans (1 fold, no TTA, full size)")
    b.add_argument("--weights", help="weights folder (default: as `pdac detect`)")
    b.add_argument("--folds", type=int, nargs="+", help="stage-2 folds (default: all present)")
    b.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None, help="stage-2 mirroring TTA")
    b.add_argument("--step", type=float, help="tile step size (as `pdac detect --step`)")
    b.add_argument("--json", help="also write all timings (or the equivalence results) to this file")
    e = b.add_argument_group("precision equivalence (fp32 vs bf16 results instead of timings)")
    e.add_argument("--precision-equivalence", action="store_true",
                   help="run both precisions on held-out phantoms (and --scans): likelihood differences, AUROC/AP "
                        "with paired bootstrap CIs of the difference, candidate agreement, map Dice")
    e.add_argument("--cases", type=int, default=40, help="held-out phantoms, half with a PDAC")
    e.add_argument("--seed", type=int, default=19, help="phantom seed (not a training or recorded held-out seed)")
    e.add_argument("--scans", nargs="+", default=[], help="extra scans without labels, e.g. a real CT")
    e.add_argument("--work", help="folder for the phantoms (kept and reused; default: a temporary folder)")
    g = b.add_argument_group("Grand Challenge API methods (exec vs invoke on the same cases instead)")
    g.add_argument("--gc-api", action="store_true",
                   help="per-case wall time of exec (one process.py per case) and invoke (a warm server, second and "
                        "later cases) on the GC sample and --gc-phantoms phantoms; ends with invoke_vs_exec=X.XX")
    g.add_argument("--gc-phantoms", type=int, default=3, help="small phantoms besides the GC sample (default 3)")
    b.set_defaults(func=cmd_bench)


def cmd_bench(args) -> int:
    from pdac.lab.bench import BenchSettings, run_bench

    if args.precision_equivalence:
        return cmd_precision_equivalence(args)
    if args.gc_api:
        from pdac.lab.bench_gc import run_bench_gc

        if args.gc_phantoms < 1:
            raise UsageError("--gc-phantoms must be at least 1")
        return _report(*run_bench_gc(args.gc_phantoms, weights=args.weights), args.json)
    if args.runs < 1:
        raise UsageError("--runs must be at least 1")
    settings = BenchSettings(sizes=tuple(args.sizes or ()), runs=args.runs, weights=args.weights,
                             folds=tuple(args.folds or ()), tta=args.tta, step=args.step, real_plans=args.real_plans)
    return _report(*run_bench(settings), args.json)


def cmd_precision_equivalence(args) -> int:
    from pdac.lab.precision import EquivalenceSettings, run_precision_equivalence

    if args.cases < 2:
        raise UsageError("--cases must be at least 2 (one with and one without a PDAC)")
    for scan in args.scans:
        if not Path(scan).is_file():
            raise UsageError(f"--scans: no such file: {scan}")
    settings = EquivalenceSettings(cases=args.cases, seed=args.seed, scans=tuple(args.scans), weights=args.weights,
                                   work=args.work)
    return _report(*run_precision_equivalence(settings), args.json)


def _report(results: dict, lines: list[str], json_path: str | None) -> int:
    """Print a lab command's report lines (the last one is its summary) and optionally save its numbers."""
    if json_path:
        Path(json_path).write_text(json.dumps(results, indent=1))
    print("\n".join(lines))
    return 0


def add_study_parser(sub) -> None:
    st = sub.add_parser("study", help="the pre-registered loss study (docs/study/PROTOCOL.md): train the lesion model "
                        "per loss and training seed, compare false positives")
    st.add_argument("-o", "--output", default=str(Path("docs") / "study"),
                    help="report folder; each finished run is recorded in its runs/ (default: docs/study)")
    st.add_argument("--work", default=str(Path("work") / "study"), help="working folder (datasets, models)")
    st.add_argument("--quick", action="store_true", help="a few-minute end-to-end check with tiny budgets")
    st.add_argument("--arms", nargs="+", metavar="ARM",
                    help="arms to run: ce dice tversky-fp tversky-fn focal-tversky dice-ce tversky-ce (default: all)")
    st.add_argument("--seeds", nargs="+", type=int, metavar="K",
                    help="training seeds, for every chosen arm (default: 1 2 3 for the hypotheses' four arms, "
                    "1 for the others)")
    st.add_argument("--max-minutes", type=float, metavar="M",
                    help="start no run that would end more than M minutes after this invocation started "
                    "(default 135; 0: no limit); rerun to continue")
    st.add_argument("--epochs", type=int, help="override the number of epochs per run")
    st.add_argument("--optimizer", choices=["sgd", "adam"],
                    help="sgd: nnU-Net's trainers; adam: their AdamW twins, for short CPU budgets "
                         "(default: adam on phantoms, sgd on real data)")
    st.add_argument("--device", choices=["cpu", "cuda"], help="for training and detection (default: cpu)")
    st.add_argument("--images", help="real data: PANORAMA scans (default: synthetic phantoms)")
    st.add_argument("--labels", help="real data: PANORAMA labels")
    st.add_argument("--pancreas-weights", help="stage-1 model folder shared by all arms (default: weights/pancreas)")
    st.set_defaults(func=cmd_study)


def cmd_study(args) -> int:
    from pdac.lab.study import StudySettings, run_study

    if bool(args.images) != bool(args.labels):
        raise UsageError("--images and --labels go together")
    # AdamW for the CPU-budget synthetic study; nnU-Net's SGD for real data unless asked otherwise.
    changes: dict = {"optimizer": args.optimizer or ("sgd" if args.images else "adam")}
    if args.epochs:
        changes["epochs"] = args.epochs
    if args.arms:
        changes["arms"] = tuple(args.arms)
    if args.seeds:
        changes.update(seeds=tuple(args.seeds), single_seed_arms=())
    if args.max_minutes is not None:
        changes["max_minutes"] = args.max_minutes
    if args.device:
        changes["device"] = args.device
    settings = dataclasses.replace(StudySettings.quick() if args.quick else StudySettings(), **changes)
    pancreas = Path(args.pancreas_weights or Path("weights") / "pancreas")
    run_study(Path(args.output), Path(args.work), settings, pancreas,
              Path(args.images) if args.images else None, Path(args.labels) if args.labels else None)
    return 0
