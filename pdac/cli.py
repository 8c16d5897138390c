"""`pdac` command line: a thin layer over the package's functions.

Exit codes: 0 ok; 1 at least one case failed in `pdac detect`; 2 usage error; 3 input error;
4 weights error; 5 output error; 6 DICOM send failed or objects did not all arrive; 130 / 143 interrupted
(SIGINT / SIGTERM).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path

from pdac.errors import Interrupted, PdacError, UsageError
from pdac.lab.commands import add_phantom_parser, add_real_scan_parser, add_synth_parser, workers_count

log = logging.getLogger("pdac")


def setup_logging(verbose: bool = False) -> None:
    """Logs go to stderr; third-party chatter is kept at WARNING."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", force=True)
    for noisy in ("matplotlib", "PIL", "numexpr", "pynetdicom", "highdicom", "pydicom"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from pdac.log_safety import install

    install()  # input text in log arguments cannot forge lines (control characters escaped)


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
    t.add_argument("--resume", action="store_true", help="continue from the fold's latest checkpoint")
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
    b.set_defaults(func=cmd_bench)


def cmd_bench(args) -> int:
    from pdac.lab.bench import BenchSettings, run_bench

    if args.precision_equivalence:
        return cmd_precision_equivalence(args)
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
