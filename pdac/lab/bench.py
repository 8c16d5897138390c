"""`pdac bench`: our pipeline (a) in fp32 and in bf16 against a baseline-style reference (b) and the pure
network time (c).

(a) `Pipeline(...)` built and run on one scan, in-process (models loaded once, nothing on disk), once with
    `runtime.precision = "fp32"` ("ours") and once with "bf16" ("ours_bf16": bfloat16 autocast on the CPU).
(b) What earlier systems did, written here from their description: the scan resampled and saved as
    NIfTI, `nnUNetv2_predict_from_modelfolder` as a subprocess for stage 1, the crop saved as NIfTI,
    a second subprocess for stage 2 with `--save_probabilities`, the 7-class `.npz` reloaded, then
    the crop bookkeeping and lesion extraction.
(c) Only the forward passes (sliding window, TTA, folds) that (a) must do for that scan's stage-1
    input and stage-2 crop, on already preprocessed tensors, in fp32.

Each variant runs in its own fresh process, `--runs` times; medians are reported, with the peak
resident memory of the process (and its children for (b)). The last line is
`speedup_vs_baseline_style=X.XX overhead_vs_network=Y.YY peak_rss_gb=Z.Z bf16_speedup=W.WW` (fp32 (a) / bf16 (a),
end to end).
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from pdac.config import load_config

log = logging.getLogger(__name__)

# The official baseline's real plans (shipped with the package: the bench must work outside the repo).
REAL_PLANS = Path(__file__).resolve().parent / "data" / "panorama-baseline"


def random_model_folder(src: Path, dst: Path, background_bias: float | None = None, seed: int = 0) -> None:
    """An nnU-Net trained-model folder with `src`'s exact plans.json/dataset.json and a randomly
    initialised checkpoint in nnU-Net's format (fold 0, trainer `nnUNetTrainer`)."""
    import torch
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    torch.manual_seed(seed)
    dst.mkdir(parents=True)
    shutil.copyfile(src / "plans.json", dst / "plans.json")
    shutil.copyfile(src / "dataset.json", dst / "dataset.json")
    pm = PlansManager(json.loads((src / "plans.json").read_text()))
    cm = pm.get_configuration("3d_fullres")
    lm = pm.get_label_manager(json.loads((src / "dataset.json").read_text()))
    net = get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                 cm.network_arch_init_kwargs_req_import, 1, lm.num_segmentation_heads,
                                 allow_init=True, deep_supervision=True)
    if background_bias is not None:  # make the untrained net say "background" everywhere
        with torch.no_grad():
            for layer in net.decoder.seg_layers:
                layer.weight.zero_()
                bias = [background_bias] + [-background_bias] * (lm.num_segmentation_heads - 1)
                layer.bias.copy_(torch.tensor(bias))
    (dst / "fold_0").mkdir()
    torch.save({"network_weights": net.state_dict(), "trainer_name": "nnUNetTrainer",
                "init_args": {"plans": None, "configuration": "3d_fullres", "fold": 0, "dataset_json": None},
                "inference_allowed_mirroring_axes": (0, 1, 2), "current_epoch": 0},
               dst / "fold_0" / "checkpoint_final.pth")


def real_size_weights(dst: Path) -> Path:
    """Weights folder from the official baseline's real plans, random weights; stage 1 finds a pancreas
    nowhere, so stage 2 runs on the documented fallback box (a realistic ROI size), and the lesion model
    finds nothing, so the post-processing is trivial (its cost is measured with the demo weights)."""
    from pdac.infer.weights import write_manifest

    random_model_folder(next(REAL_PLANS.glob("Dataset103_*/*")), dst / "pancreas", background_bias=10.0)
    # The lesion head is biased to background too: with random weights its probability map is noise, whose
    # hundreds of thousands of thresholded components make report_guided_annotation's candidate extraction
    # take minutes (measured: 370 s of a 480 s run), which no trained model produces.
    random_model_folder(next(REAL_PLANS.glob("Dataset104_*/*")), dst / "lesion", background_bias=10.0)
    write_manifest(dst)
    return dst


def _cpu_seconds(children: bool = False) -> float:
    """User + system CPU time of this process (or of its finished children): unlike wall time, it hardly
    grows when other processes share the CPU, so it is the steadier number on a busy machine."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _peak_rss_gb(children: bool = False) -> float:
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss / 1024**2


# ----------------------------------------------------------------------------------------------------
# The three variants, each run in a fresh process by `_worker`.
# ----------------------------------------------------------------------------------------------------

def run_ours(scan_path: Path, weights: Path, overrides: dict) -> dict:
    from pdac.infer.io import read_image
    from pdac.infer.pipeline import Pipeline

    t0, c0 = time.perf_counter(), _cpu_seconds()
    pipeline = Pipeline(load_config(overrides=overrides), str(weights))
    result = pipeline.run(read_image(scan_path), scan_path.name)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "cpu_s": _cpu_seconds() - c0, "likelihood": result.likelihood,
            "precision": pipeline.precision, "peak_rss_gb": _peak_rss_gb()}


def run_network_only(scan_path: Path, weights: Path, overrides: dict) -> dict:
    import torch

    from pdac.infer.geometry import centred_region, crop, crop_region_around_mask
    from pdac.infer.io import read_image
    from pdac.infer.models import predict_logits, preprocess
    from pdac.infer.pancreas import segment_pancreas
    from pdac.infer.pipeline import Pipeline, sanitize

    config = load_config(overrides=overrides)
    pipeline = Pipeline(config, str(weights))
    scan = sanitize(read_image(scan_path))
    low, mask = segment_pancreas(pipeline.pancreas_model, scan, config.stage1.spacing_mm)
    region = crop_region_around_mask(mask, low, scan, config.crop.margins_mm) or centred_region(
        scan, config.crop.fallback_extent_mm)
    inputs = [(pipeline.pancreas_model, preprocess(pipeline.pancreas_model, low)[0]),
              (pipeline.lesion_model, preprocess(pipeline.lesion_model, crop(scan, region))[0])]
    t0, c0 = time.perf_counter(), _cpu_seconds()
    with torch.no_grad():
        for model, data in inputs:
            predict_logits(model, data)
    return {"seconds": time.perf_counter() - t0, "cpu_s": _cpu_seconds() - c0, "precision": pipeline.precision,
            "peak_rss_gb": _peak_rss_gb()}


def baseline_style_map(scan_path: Path, weights: Path, overrides: dict) -> sitk.Image:
    """The detection map the baseline-style way (subprocesses, files); the unoptimised reference."""
    from pdac.infer.candidates import candidates
    from pdac.infer.geometry import (
        centred_region,
        copy_geometry,
        crop,
        crop_region_around_mask,
        paste,
        resample_to_spacing,
    )
    from pdac.infer.io import read_image
    from pdac.infer.lesion import mask_probability
    from pdac.infer.models import fold_checkpoints
    from pdac.infer.weights import unverified_model_folder
    from pdac.train.trainers import trainers_path

    config = load_config(overrides=overrides)
    tool = str(Path(sys.executable).with_name("nnUNetv2_predict_from_modelfolder"))
    env = {**os.environ, "nnUNet_extTrainer": trainers_path()}
    with tempfile.TemporaryDirectory(prefix="pdac-bench-") as tmp:
        tmp = Path(tmp)
        for sub in ("s1_in", "s1_out", "s2_in", "s2_out"):
            (tmp / sub).mkdir()
        scan = read_image(scan_path)
        low = resample_to_spacing(scan, config.stage1.spacing_mm, default_value=-1024.0)
        sitk.WriteImage(low, str(tmp / "s1_in" / "case_0000.nii.gz"))

        def predict(stage, cfg, extra):
            # the same folds and checkpoint names the pipeline would use
            chosen = fold_checkpoints(unverified_model_folder(weights / cfg.model), cfg)
            cmd = [tool, "-i", str(tmp / f"{stage}_in"), "-o", str(tmp / f"{stage}_out"),
                   "-m", str(weights / cfg.model), "-f", *[f for f, _ in chosen], "-chk", Path(chosen[0][1]).name,
                   "-device", "cpu", "-npp", "1", "-nps", "1",
                   "--disable_progress_bar", *([] if cfg.mirroring_on("cpu") else ["--disable_tta"]), *extra]
            subprocess.run(cmd, check=True, env=env, capture_output=True)

        predict("s1", config.stage1, [])
        seg_img = sitk.ReadImage(str(tmp / "s1_out" / "case.nii.gz"))
        seg = sitk.GetArrayFromImage(seg_img) > 0
        region = crop_region_around_mask(seg, seg_img, scan, config.crop.margins_mm)
        found = region is not None
        region = region or centred_region(scan, config.crop.fallback_extent_mm)
        roi = crop(scan, region)
        sitk.WriteImage(roi, str(tmp / "s2_in" / "case_0000.nii.gz"))
        predict("s2", config.stage2, ["--save_probabilities"])
        probabilities = np.load(tmp / "s2_out" / "case.npz")["probabilities"]
        probability = probabilities[config.stage2.lesion_channel].astype(np.float32)
        mask_probability(probability, roi, seg_img, seg if found else None, config.detection)
        detection, _ = candidates(probability, config.detection)
        return copy_geometry(paste(detection, region, scan.GetSize()[::-1]), scan)


def run_baseline_style(scan_path: Path, weights: Path, overrides: dict) -> dict:
    t0, c0 = time.perf_counter(), _cpu_seconds() + _cpu_seconds(children=True)
    full = baseline_style_map(scan_path, weights, overrides)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "cpu_s": _cpu_seconds() + _cpu_seconds(children=True) - c0,
            "likelihood": float(sitk.GetArrayViewFromImage(full).max()),
            "peak_rss_gb": max(_peak_rss_gb(), _peak_rss_gb(children=True))}


# variant -> (what runs, its runtime.precision; None: the reference, which runs nnU-Net's own predictor)
VARIANTS = {"ours": (run_ours, "fp32"), "ours_bf16": (run_ours, "bf16"), "baseline_style": (run_baseline_style, None),
            "network": (run_network_only, "fp32")}


def _worker(argv: list[str]) -> int:
    variant, scan, weights, overrides = argv[0], Path(argv[1]), Path(argv[2]), json.loads(argv[3])
    run, precision = VARIANTS[variant]
    if precision:
        overrides = {**overrides, "runtime": {**overrides.get("runtime", {}), "precision": precision}}
    print(json.dumps(run(scan, weights, overrides)))
    return 0


def _run_variant(variant: str, scan: Path, weights: Path, overrides: dict) -> dict:
    cmd = [sys.executable, "-m", "pdac.lab.bench", "--worker", variant, str(scan), str(weights), json.dumps(overrides)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"bench variant {variant} failed: {r.stderr.strip().splitlines()[-1:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def bench(sizes: list[str], runs: int, weights: Path | None, overrides: dict, real_plans: bool,
          variants=("ours", "ours_bf16", "baseline_style", "network")) -> dict:
    from pdac.infer.weights import resolve_weights_dir
    from pdac.lab.phantom import PhantomSpec, make_phantom

    with tempfile.TemporaryDirectory(prefix="pdac-bench-data-") as tmp:
        tmp = Path(tmp)
        weights = real_size_weights(tmp / "weights") if real_plans else resolve_weights_dir(weights)
        results = {}
        for size in sizes:
            image, _, _ = make_phantom(np.random.SeedSequence([4242, 0]), PhantomSpec(size=size))
            scan = tmp / f"bench_{size}.nii.gz"
            sitk.WriteImage(image, str(scan))
            rows = {v: [] for v in variants}
            for i in range(runs):  # interleaved, so drift hits every variant alike
                for v in variants:
                    rows[v].append(_run_variant(v, scan, weights, overrides))
                    log.info("%s %s run %d: %.2f s (cpu %.1f s)", size, v, i + 1, rows[v][-1]["seconds"],
                             rows[v][-1]["cpu_s"])
            results[size] = {
                "scan_size": list(image.GetSize()),
                **{v: {"median_s": statistics.median(r["seconds"] for r in rows[v]),
                       "runs_s": [round(r["seconds"], 3) for r in rows[v]],
                       "median_cpu_s": statistics.median(r["cpu_s"] for r in rows[v]),
                       "runs_cpu_s": [round(r["cpu_s"], 2) for r in rows[v]],
                       "precision": rows[v][0].get("precision"),
                       "peak_rss_gb": max(r["peak_rss_gb"] for r in rows[v])} for v in variants},
            }
    return results


@dataclass(frozen=True)
class BenchSettings:
    sizes: tuple[str, ...] = ()  # empty: small and full (full only with real_plans)
    runs: int = 3
    weights: str | None = None
    folds: tuple[int, ...] = ()
    tta: bool | None = None
    step: float | None = None
    real_plans: bool = False


def run_bench(s: BenchSettings) -> tuple[dict, list[str]]:
    """Time the variants side by side; returns (results per size, report lines ending with the ratios)."""
    overrides: dict = {}
    if s.real_plans:
        overrides = {"stage2": {"tta": False, "folds": [0]}, "stage1": {"folds": [0]}}
    if s.folds:
        overrides.setdefault("stage2", {})["folds"] = list(s.folds)
    if s.tta is not None:
        overrides.setdefault("stage2", {})["tta"] = s.tta
    if s.step:
        overrides.setdefault("stage2", {})["tile_step_size"] = s.step
    sizes = list(s.sizes) or (["full"] if s.real_plans else ["small", "full"])
    variants = ("ours", "ours_bf16", "network") if s.real_plans else ("ours", "ours_bf16", "baseline_style", "network")
    results = bench(sizes, s.runs, s.weights, overrides, s.real_plans, variants)
    lines = []
    for size, r in results.items():
        cols = "  ".join(f"{v}: {r[v]['median_s']:.2f} s (cpu {r[v]['median_cpu_s']:.1f} s, peak "
                         f"{r[v]['peak_rss_gb']:.2f} GB)" for v in variants)
        lines.append(f"{size} {'x'.join(map(str, r['scan_size']))}: {cols}")
    last = results[sizes[-1]]
    speedup = (last["baseline_style"]["median_s"] / last["ours"]["median_s"]) if "baseline_style" in last \
        else float("nan")
    overhead = last["ours"]["median_s"] / last["network"]["median_s"]
    bf16_speedup = last["ours"]["median_s"] / last["ours_bf16"]["median_s"]
    peak = max(r[v]["peak_rss_gb"] for r in results.values() for v in ("ours",))
    lines.append(f"speedup_vs_baseline_style={speedup:.2f} overhead_vs_network={overhead:.2f} peak_rss_gb={peak:.1f} "
                 f"bf16_speedup={bf16_speedup:.2f}")
    return results, lines


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
        raise SystemExit(_worker(sys.argv[2:]))
    raise SystemExit("use `pdac bench`")
