"""GPU readiness check: the real-size plans end to end on a full-size phantom, 1 fold and 5 folds + TTA.

`scripts/gpu-check.sh` runs it (under 10 minutes on one GPU). It logs torch, CUDA, cuDNN and driver
versions and the device, then per run the stage seconds, the total and the peak GPU memory, and ends
with one line `gpu_check device=... one_fold_s=... five_folds_tta_s=... peak_gpu_gb=...`.
The networks have random weights (the official baseline's plans, biased to background), so stage 1
finds no pancreas and stage 2 runs on the documented fallback box: a realistic region of interest.
`--device cpu --weights weights --size small` exercises the same path on the CPU in seconds (tests).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("pdac.gpu_check")

RUNS = {"one_fold": {"folds": [0], "tta": False}, "five_folds_tta": {"folds": [0, 1, 2, 3, 4], "tta": True}}


def environment(device: str) -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "device": device}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info |= {"gpu": props.name, "gpu_memory_gb": round(props.total_memory / 1024**3, 1),
                 "compute_capability": f"{props.major}.{props.minor}", "gpus_visible": torch.cuda.device_count()}
        if shutil.which("nvidia-smi"):
            smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True)
            info["driver"] = smi.stdout.strip().splitlines()[0] if smi.returncode == 0 and smi.stdout.strip() else None
    return info


def five_fold_real_size_weights(dst: Path) -> Path:
    """Random-weight model folders from the real plans, the lesion model with five (identical) folds."""
    from pdac.infer.weights import write_manifest
    from pdac.lab.bench import real_size_weights

    real_size_weights(dst)
    for fold in range(1, 5):
        shutil.copytree(dst / "lesion" / "fold_0", dst / "lesion" / f"fold_{fold}")
    write_manifest(dst)
    return dst


def timed_run(scan, weights: Path, device: str, folds: list[int], tta: bool) -> dict:
    import torch

    from pdac.config import load_config
    from pdac.infer.pipeline import Pipeline

    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    config = load_config(overrides={"runtime": {"device": device}, "stage2": {"folds": folds, "tta": tta}})
    pipeline = Pipeline(config, str(weights))
    load_s = time.perf_counter() - t0
    result = pipeline.run(scan, "gpu-check")
    if device == "cuda":
        torch.cuda.synchronize()
    total = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 1024**3 if device == "cuda" else None
    return {"folds": folds, "tta": tta, "load_s": round(load_s, 2), **{f"{k}_s": v for k, v in result.seconds.items()},
            "total_s": round(total, 2), "peak_gpu_gb": round(peak, 2) if peak is not None else None,
            "likelihood": result.likelihood}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--size", choices=["small", "full", "large"], default="full", help="phantom size")
    p.add_argument("--weights", help="use this weights folder instead of random real-size networks")
    p.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS), help="configurations to time")
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        log.error("CUDA is not available (torch %s, built for CUDA %s)", torch.__version__, torch.version.cuda)
        return 3
    env = environment(args.device)
    log.info("environment: %s", json.dumps(env))

    from pdac.lab.phantom import PhantomSpec, make_phantom

    scan, _, _ = make_phantom(np.random.SeedSequence([4242, 0]), PhantomSpec(size=args.size))
    log.info("phantom %s: %s voxels", args.size, "x".join(map(str, scan.GetSize())))
    results = {}
    with tempfile.TemporaryDirectory(prefix="pdac-gpu-check-") as tmp:
        weights = Path(args.weights) if args.weights else five_fold_real_size_weights(Path(tmp) / "weights")
        available = sorted(int(d.name[5:]) for d in (weights / "lesion").glob("fold_*") if d.name[5:].isdigit())
        for name in args.runs:
            run = RUNS[name]
            folds = [f for f in run["folds"] if f in available] or available[:1]
            results[name] = timed_run(scan, weights, args.device, folds, run["tta"])
            log.info("%s: %s", name, json.dumps(results[name]))
    record = {"environment": env, "scan_size": list(scan.GetSize()), "runs": results}
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n")
    peak = max((r["peak_gpu_gb"] or 0.0) for r in results.values())
    times = " ".join(f"{name}_s={r['total_s']:.1f}" for name, r in results.items())
    print(f"gpu_check device={env.get('gpu', args.device).replace(' ', '_')} {times} peak_gpu_gb={peak:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
