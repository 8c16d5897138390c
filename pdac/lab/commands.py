"""The lab's command-line entries that `pdac` mounts: `pdac phantom` (procedural phantoms), `pdac synth`
(synthetic CT from real label maps) and `pdac real-scan` (where stage 1 puts the pancreas on real scans)."""

from __future__ import annotations

from pathlib import Path

from pdac.errors import UsageError


def workers_count(text: str) -> int:
    """argparse type of --workers: 1 to 256 processes (argparse refuses anything else, exit 2)."""
    import argparse

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
    sy.add_argument("--strict", action="store_true", help="stop at the first map that cannot be used")
    sy.add_argument("--previews", type=int, default=3, help="write PNG previews of the first N volumes")
    sy.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    sy.set_defaults(func=cmd_synth)


def cmd_synth(args) -> int:
    from pdac.lab.synth.dataset import generate_from_labelmaps, load_library

    if args.n < 1:
        raise UsageError("-n must be at least 1")
    if not 0 <= args.positive_fraction <= 1:
        raise UsageError("--positive-fraction must be in [0, 1]")
    if not args.labelmaps.is_dir():
        raise UsageError(f"--labelmaps {args.labelmaps}: not a folder")
    library = load_library(args.labelmaps, args.sources, strict=args.strict, workers=args.workers)
    generate_from_labelmaps(args.output, library, {args.split: args.n}, args.seed,
                            positive_fraction=args.positive_fraction, previews=args.previews, workers=args.workers)
    return 0


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
