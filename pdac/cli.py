"""`pdac` command line: a thin layer over the package's functions.

Exit codes: 0 ok; 1 at least one case failed in `pdac detect`; 2 usage error; 3 input error;
4 weights error; 5 output error; 6 DICOM send failed or objects did not all arrive; 130 / 143 interrupted
(SIGINT / SIGTERM).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from pdac.errors import Interrupted, PdacError, UsageError
from pdac.lab.commands import (
    add_bench_parser,
    add_phantom_parser,
    add_real_scan_parser,
    add_study_parser,
    add_synth_parser,
    workers_count,
)
from pdac.logs import setup_logging

log = logging.getLogger("pdac")


def add_pipeline_options(p: argparse.ArgumentParser) -> None:
    from pdac.config import allowed

    g = p.add_argument_group("pipeline options (defaults: resources/pipeline.toml)")
    g.add_argument("--weights", help="weights folder (default: $PDAC_WEIGHTS, /opt/ml/model, ./weights)")
    g.add_argument("--config", help="configuration TOML (default: resources/pipeline.toml)")
    g.add_argument("--folds", type=int, nargs="+", help="stage-2 folds to ensemble (default: all present)")
    g.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None, help="stage-2 mirroring TTA")
    g.add_argument("--step", type=float, help="sliding-window tile step size, a fraction of the patch in "
                   f"{allowed('stage2', 'tile_step_size')} (sets stage1 and stage2.tile_step_size)")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], help="compute device")
    g.add_argument("--threads", type=int, help=f"CPU threads for torch, in {allowed('runtime', 'threads')} "
                   "(0: all cores)")
    g.add_argument("--precision", choices=["auto", "fp32", "bf16"],
                   help="network arithmetic on the CPU (bf16: bfloat16 autocast; auto: bf16 where the CPU has "
                        "native bfloat16 instructions); CUDA always uses nnU-Net's mixed precision")
    g.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override any configuration value, e.g. --set detection.dynamic_threshold_factor=4")


def config_from_args(args):
    from pdac.config import load_config, parse_overrides

    overrides = parse_overrides(args.overrides)
    option = vars(args).get  # subcommands without the pipeline option group (prepare) lack some of them
    s2 = overrides.setdefault("stage2", {})
    if option("folds") is not None:
        s2["folds"] = list(args.folds)
    if option("tta") is not None:
        s2["tta"] = args.tta
    if option("step") is not None:  # ranges: checked with every other setting in load_config
        s2["tile_step_size"] = args.step
        overrides.setdefault("stage1", {})["tile_step_size"] = args.step
    rt = overrides.setdefault("runtime", {})
    if option("device"):
        rt["device"] = args.device
    if option("threads") is not None:
        rt["threads"] = args.threads
    if option("precision"):
        rt["precision"] = args.precision
    return load_config(args.config, {k: v for k, v in overrides.items() if v})


def add_detect_parser(sub) -> None:
    d = sub.add_parser("detect", help="run the pipeline on scans (files or folders)")
    d.add_argument("inputs", nargs="+", help="scan files (.mha, .nii.gz, .nii, .mhd) or folders of them")
    d.add_argument("-o", "--output", required=True, help="output folder")
    d.add_argument("--overlays", action="store_true", help="also write PNG views through the top lesion")
    d.add_argument("--report", action="store_true",
                   help="also write report.html: one self-contained page with every case (written on Ctrl-C too), "
                   "and a viewer page per case, cases/<case>.html (three planes, the lesion list; up to 10 MB each)")
    d.add_argument("--no-viewer", action="store_true", help="with --report: no cases/<case>.html viewer pages")
    d.add_argument("--shard", help="K/N: process every N-th case starting at K (0-based), for array jobs")
    g = d.add_argument_group("DICOM outputs (for DICOM series inputs)")
    g.add_argument("--dicom-out", action="store_true",
                   help="also write <case>_seg.dcm (DICOM SEG: lesion candidates + stage-1 pancreas) and <case>_sr.dcm "
                        "(Comprehensive 3D SR, TID 1500) in the source study")
    add_send_options(g, "--send", "send the DICOM outputs to this archive by C-STORE (implies --dicom-out), "
                                  "e.g. ORTHANC@127.0.0.1:4242; the archive is checked before any work")
    add_pipeline_options(d)
    d.set_defaults(func=cmd_detect)


def add_send_options(g, flag: str, text: str, required: bool = False) -> None:
    g.add_argument(flag, dest="send", metavar="AE@HOST:PORT", required=required, help=text)
    g.add_argument("--calling-ae", default="PDAC", help="our AE title towards the archive (default: PDAC)")
    g.add_argument("--send-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="connection, association and response timeout (default: 30)")


def dicom_options(args):
    """DicomOut for `--dicom-out` / `--send`, or None."""
    if not (args.dicom_out or args.send):
        return None
    from pdac.dicom.send import check_ae_title, parse_destination
    from pdac.infer.dicom_out import DicomOut

    if args.send_timeout <= 0:
        raise UsageError("--send-timeout must be positive")
    destination = parse_destination(args.send) if args.send else None
    return DicomOut(destination, check_ae_title(args.calling_ae, "--calling-ae"), args.send_timeout)


def cmd_detect(args) -> int:
    from pdac.errors import raise_on_termination_signals
    from pdac.infer.batch import detect_batch, parse_shard

    raise_on_termination_signals()  # a case's half-written outputs are removed, finished cases stay

    config = config_from_args(args)
    shard = parse_shard(args.shard) if args.shard is not None else None  # an empty --shard= is refused
    return detect_batch(args.inputs, Path(args.output), config, args.weights, overlays=args.overlays, shard=shard,
                        report=args.report, viewer=not args.no_viewer, dicom=dicom_options(args))


def add_send_parser(sub) -> None:
    s = sub.add_parser("send", help="send DICOM files (e.g. the SEG and SR of `pdac detect --dicom-out`) to an archive "
                       "by C-STORE and check that they arrived")
    s.add_argument("files", nargs="+", help="DICOM files, or folders (their *.dcm files)")
    add_send_options(s, "--to", "the archive, e.g. ORTHANC@127.0.0.1:4242", required=True)
    s.set_defaults(func=cmd_send)


def cmd_send(args) -> int:
    from pdac.dicom.send import check_ae_title, parse_destination, send_files
    from pdac.errors import SendError

    destination = parse_destination(args.send)
    check_ae_title(args.calling_ae, "--calling-ae")
    if args.send_timeout <= 0:
        raise UsageError("--send-timeout must be positive")
    files = []
    for name in args.files:
        p = Path(name)
        if p.is_dir():
            files += sorted(f for f in p.glob("*.dcm") if f.is_file())
        elif p.is_file():
            files.append(p)
        else:
            raise UsageError(f"{name}: no such file or folder")
    if not files:
        raise UsageError("no DICOM files to send (folders are searched for *.dcm)")
    report = send_files(destination, files, args.calling_ae, args.send_timeout)
    if not report.complete:
        raise SendError(report.summary())
    log.info("%s", report.summary())
    return 0


def add_merge_parser(sub) -> None:
    mg = sub.add_parser("merge", help="join the likelihood files of `pdac detect --shard K/N` runs")
    mg.add_argument("output", help="the output folder the shards wrote to")
    mg.set_defaults(func=cmd_merge)


def cmd_merge(args) -> int:
    from pdac.infer.shards import LIKELIHOODS, merge_shards

    merged, n = merge_shards(Path(args.output))
    print(f"{len(merged)} cases from {n} shards -> {Path(args.output) / LIKELIHOODS}")
    return 0


def add_prepare_parser(sub) -> None:
    pr = sub.add_parser("prepare", help="PANORAMA scans + labels -> the two nnU-Net raw datasets")
    pr.add_argument("--images", required=True, help="folder of PANORAMA scans <case>_0000.nii.gz/.mha (sub-folders "
                    "searched too, e.g. batch_1/ batch_2/)")
    pr.add_argument("--labels", required=True, help="folder of PANORAMA label maps <case>.nii.gz/.mha (values 0-6)")
    pr.add_argument("--out", dest="output", required=True, help="nnUNet_raw folder")
    pr.add_argument("--stage1-id", type=int, default=113, help="nnU-Net dataset id of the pancreas dataset")
    pr.add_argument("--stage2-id", type=int, default=114, help="nnU-Net dataset id of the lesion dataset")
    pr.add_argument("--workers", type=workers_count, default=1, help="parallel processes (default 1)")
    pr.add_argument("--file-ending", default=".nii.gz", choices=[".nii.gz", ".mha"], help="format of the written cases")
    pr.add_argument("--no-verify", action="store_true", help="skip nnU-Net's dataset integrity check")
    pr.add_argument("--config", help="configuration TOML (stage-1 spacing, crop margins, pancreas labels)")
    pr.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override a configuration value")
    pr.set_defaults(func=cmd_prepare)


def cmd_prepare(args) -> int:
    from pdac.train.prepare import prepare

    config = config_from_args(args)
    summary = prepare(Path(args.images), Path(args.labels), Path(args.output), config, args.stage1_id,
                      args.stage2_id, workers=args.workers, file_ending=args.file_ending, verify=not args.no_verify)
    print(f"prepared {summary['prepared']} cases, skipped {len(summary['skipped'])}: "
          f"{summary['stage1']} {summary['stage2']}")
    return 0


def add_plan_parser(sub) -> None:
    pl = sub.add_parser("plan", help="nnU-Net fingerprint + plan + preprocess (3d_fullres)")
    pl.add_argument("dataset", type=int, help="nnU-Net dataset id (e.g. 114)")
    pl.add_argument("--planner", default="nnUNetPlannerResEncM", help="nnU-Net experiment planner class")
    pl.add_argument("--tiny", metavar="PLANS_NAME", help="also derive a tiny-network plans variant with this name")
    pl.add_argument("--workers", type=workers_count, default=2, help="preprocessing processes (default 2)")
    pl.set_defaults(func=cmd_plan)


def cmd_plan(args) -> int:
    from pdac.train import training

    identifier = training.plan(args.dataset, args.planner, num_processes=args.workers)
    if args.tiny:
        from nnunetv2.paths import nnUNet_preprocessed
        from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

        folder = Path(nnUNet_preprocessed.require()) / maybe_convert_to_dataset_name(args.dataset)
        identifier = training.tiny_plans(folder, identifier, args.tiny)
    training.preprocess(args.dataset, identifier, num_processes=args.workers)
    print(identifier)
    return 0


def add_train_parser(sub) -> None:
    t = sub.add_parser("train", help="train one fold with nnU-Net (our trainers found via nnUNet_extTrainer)")
    t.add_argument("dataset", help="nnU-Net dataset id or name")
    t.add_argument("fold", help="fold 0-4 of nnU-Net's 5-fold split, or 'all' (every case, no validation)")
    t.add_argument("--trainer", default="nnUNetTrainerTverskyCELoss", help="trainer class (ours or nnU-Net's)")
    t.add_argument("--plans", default="nnUNetResEncUNetMPlans", help="plans identifier from `pdac plan`")
    t.add_argument("--epochs", type=int, help="epochs (default: the trainer's)")
    t.add_argument("--iterations", type=int, help="iterations per epoch")
    t.add_argument("--val-iterations", type=int, help="validation iterations per epoch")
    t.add_argument("--snapshot-every", type=int, default=0, help="keep checkpoint_epochNNNN.pth every N epochs")
    t.add_argument("--device", default="cuda" if os.environ.get("CUDA_VISIBLE_DEVICES") else "cpu",
                   help="cpu or cuda (default: cuda when CUDA_VISIBLE_DEVICES is set)")
    t.add_argument("--no-validation", action="store_true", help="skip the final validation")
    t.add_argument("--resume", action="store_true",
                   help="continue a stopped or finished fold from its newest checkpoint "
                        "(final, else the newer of checkpoint_latest and the snapshots)")
    t.add_argument("--pretrained", help="warm start from this checkpoint (fresh optimiser and schedule)")
    t.add_argument("--num-gpus", type=int, default=1,
                   help="N > 1: nnU-Net's own multi-GPU (DDP) training on N CUDA devices")
    t.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    from pdac.train import training

    if args.num_gpus < 1:
        raise UsageError("--num-gpus must be at least 1")
    if args.fold != "all" and not args.fold.isdecimal():
        raise UsageError(f"fold must be a number (0-4) or 'all', got {args.fold!r}")
    if args.resume and args.pretrained:
        raise UsageError("--resume and --pretrained exclude each other: a resumed run keeps its own weights")
    if args.num_gpus > 1:
        budget = [f for f, v in (("--epochs", args.epochs), ("--iterations", args.iterations),
                                 ("--val-iterations", args.val_iterations), ("--snapshot-every", args.snapshot_every),
                                 ("--no-validation", args.no_validation)) if v]
        if budget:
            raise UsageError(f"{', '.join(budget)} cannot be combined with --num-gpus (nnU-Net's DDP training "
                             "builds the trainer by name in each process: use a trainer variant)")
        if args.device != "cuda":
            raise UsageError("--num-gpus needs --device cuda")
        training.train_multi_gpu(args.dataset, args.fold, args.trainer, args.plans, args.num_gpus,
                                 continue_training=args.resume, pretrained=args.pretrained)
        return 0
    out = training.train(args.dataset, args.fold, args.trainer, args.plans, epochs=args.epochs,
                         iterations=args.iterations, val_iterations=args.val_iterations,
                         snapshot_every=args.snapshot_every, device=args.device, validate=not args.no_validation,
                         continue_training=args.resume, pretrained=args.pretrained)
    print(out)
    return 0


def add_select_parser(sub) -> None:
    s = sub.add_parser("select-checkpoint", help="pick a fold's checkpoint by (AUROC + AP) / 2 on its validation cases")
    s.add_argument("model_folder", help="nnU-Net results folder of the lesion model")
    s.add_argument("--fold", type=int, default=0, help="fold to choose for (default 0)")
    s.add_argument("--raw-dataset", required=True, help="the stage-2 nnU-Net raw dataset folder")
    s.add_argument("--splits", required=True, help="splits_final.json from nnUNet_preprocessed")
    add_pipeline_options(s)
    s.set_defaults(func=cmd_select)


def cmd_select(args) -> int:
    from pdac.train.select_checkpoint import select_checkpoint

    result = select_checkpoint(Path(args.model_folder), args.fold, Path(args.raw_dataset), Path(args.splits),
                               config_from_args(args), device=args.device or "cpu")
    print(result["selected"])
    return 0


def add_evaluate_parser(sub) -> None:
    ev = sub.add_parser("evaluate", help="PANORAMA metrics (picai_eval) of detection maps against labels; "
                        "several --detections folders are compared")
    ev.add_argument("--detections", nargs="+", required=True, metavar="DIR",
                    help="folders of detection maps (<case>_detection_map.mha/.nii.gz, or the GC layout)")
    ev.add_argument("--labels", required=True, metavar="DIR", help="folder of <case>.nii.gz/.mha PANORAMA labels")
    ev.add_argument("--likelihoods", nargs="+", metavar="JSON",
                    help="patient likelihoods per detections folder ({case: p} or a bare number; '-': none); "
                    "default: each map's maximum")
    ev.add_argument("-o", "--output", required=True, metavar="REPORT_DIR",
                    help="report folder (not inside an input folder)")
    ev.add_argument("--scans", metavar="DIR", help="the scans (<case>_0000.mha, <case>.nii.gz, DICOM series...): "
                    "also write a viewer page per case, cases/<case>.html (reference label and detection maps over "
                    "the scan), linked from report.html")
    ev.add_argument("--names", nargs="+", help="display names of the detection sets (default: folder names)")
    ev.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="bootstrap resamples (0: no CIs)")
    ev.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    ev.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args) -> int:
    from pdac.evaluation.run import run_evaluation

    report = run_evaluation(args.detections, args.labels, Path(args.output), likelihood_files=args.likelihoods,
                            names=args.names, n_bootstrap=args.bootstrap, seed=args.seed, scan_dir=args.scans)
    print(report.summary)
    pages = ", cases/<case>.html" if args.scans else ""
    print(f"report -> {args.output} (report.html, metrics.json, summary.md, roc.png, pr.png, froc.png{pages})")
    return 0


def add_manifest_parser(sub) -> None:
    m = sub.add_parser("weights-manifest", help="check the model card (model.json; a template is written when "
                       "missing) and regenerate the SHA-256 manifest after changing weights")
    m.add_argument("weights_dir", help="weights folder (holding model.json and the model folders)")
    m.set_defaults(func=cmd_manifest)


def cmd_manifest(args) -> int:
    from pdac.infer.provenance import ensure_model_card
    from pdac.infer.weights import write_manifest

    card = ensure_model_card(Path(args.weights_dir))  # refuses (exit 4) a missing or incomplete card
    manifest = write_manifest(Path(args.weights_dir))
    from pdac.log_safety import neutral

    print(f"{len(manifest['files'])} files hashed -> {Path(args.weights_dir) / 'manifest.json'} "
          f"(model {neutral(card['name'])} {neutral(card['version'])}{', synthetic' if card['synthetic'] else ''})")
    return 0


def add_trainers_path_parser(sub) -> None:
    tp = sub.add_parser("trainers-path", help="print the folder to put in nnUNet_extTrainer")
    tp.set_defaults(func=cmd_trainers_path)


def cmd_trainers_path(args) -> int:
    from pdac.train.trainers import trainers_path

    print(trainers_path())
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pdac", description="PDAC detection in contrast-enhanced CT (PANORAMA).")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)
    add_detect_parser(sub)
    add_merge_parser(sub)
    add_send_parser(sub)
    add_phantom_parser(sub)
    add_synth_parser(sub)
    add_prepare_parser(sub)
    add_plan_parser(sub)
    add_train_parser(sub)
    add_select_parser(sub)
    add_evaluate_parser(sub)
    add_bench_parser(sub)
    add_study_parser(sub)
    add_manifest_parser(sub)
    add_trainers_path_parser(sub)
    add_real_scan_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        return args.func(args)
    except (PdacError, Interrupted) as e:
        log.error("%s", e)
        return e.exit_code
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
