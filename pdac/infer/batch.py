"""`pdac detect`: the pipeline over a batch of scans, models loaded once, one output set per case."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

from tqdm import tqdm

from pdac.config import PipelineConfig
from pdac.errors import PdacError, UsageError
from pdac.infer.dicom import find_cases
from pdac.infer.io import ensure_writable_dir, write_image_atomic, write_json_atomic
from pdac.infer.plausibility import pancreas_note
from pdac.infer.provenance import overlay_label
from pdac.infer.usage import peak_memory_gb

log = logging.getLogger(__name__)

LIKELIHOODS = "pdac-likelihood.json"


def parse_shard(text: str) -> tuple[int, int]:
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard expects K/N (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= k < n:
        raise UsageError(f"--shard {text}: need 0 <= K < N")
    return k, n


def detect_batch(inputs: list[str], out: Path, config: PipelineConfig, weights: str | None,
                 overlays: bool = False, shard: tuple[int, int] | None = None) -> int:
    """Run every scan; a failing case is reported and skipped. Returns the exit code (1 if any failed)."""
    from pdac.infer.pipeline import Pipeline

    scans = find_cases([Path(p) for p in inputs])  # image files and DICOM series
    ids = [s.case_id for s in scans]
    duplicates = sorted({c for c in ids if ids.count(c) > 1})
    if duplicates:
        raise UsageError(f"several inputs map to the same case id: {', '.join(duplicates[:5])}")
    if shard:
        k, n = shard
        scans = scans[k::n]
    if not scans:
        raise UsageError("no input scans found (expected .mha, .nii.gz, .nii or .mhd files or DICOM series)")
    ensure_writable_dir(out)
    pipeline = Pipeline(config, weights)
    likelihood_file = out / (LIKELIHOODS if not shard else f"pdac-likelihood.shard{shard[0]}of{shard[1]}.json")
    likelihoods: dict[str, float] = {}
    failures: dict[str, str] = {}
    for source in tqdm(scans, desc="detect", unit="scan"):
        case = source.case_id
        t0 = time.perf_counter()
        try:
            scan = source.read()
            result = pipeline.run(scan, case)
            write_image_atomic(result.detection_map, out / f"{case}_detection_map.mha")
            write_json_atomic({
                "case": case,
                "likelihood": result.likelihood,
                "pancreas_found": result.pancreas_found,
                "crop_index_xyz": {"start": list(result.crop.start), "size": list(result.crop.size)},
                "lesions": [dataclasses.asdict(le) for le in result.lesions],
                "weights": str(pipeline.weights_dir),
                "pancreas": result.pancreas,  # stage-1 plausibility
                "provenance": pipeline.provenance,  # model card, manifest SHA-256, pdac version, configuration
            }, out / f"{case}_lesions.json")
            if overlays:
                from pdac.infer.overlay import save_detection_overlay

                title = f"{case}: PDAC likelihood {result.likelihood:.3f}{pancreas_note(result.pancreas)}"
                save_detection_overlay(scan, result.detection_map, out / f"{case}_overlay.png", title,
                                       banner=overlay_label(pipeline.provenance))
            likelihoods[case] = result.likelihood
            log.info("%s: likelihood %.3f, %d lesion candidate(s), %.1f s (%s), peak memory %.2f GB", case,
                     result.likelihood, len(result.lesions), time.perf_counter() - t0,
                     ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items()), peak_memory_gb())
        except PdacError as e:
            failures[case] = str(e)
            log.error("%s: %s", case, e)
        except Exception as e:  # noqa: BLE001 - one bad case must not stop the batch
            failures[case] = f"{type(e).__name__}: {e}"
            log.exception("%s: unexpected error", case)
    if likelihoods:
        write_json_atomic(likelihoods, likelihood_file)
    log.info("done: %d ok, %d failed%s", len(likelihoods), len(failures),
             "".join(f"\n  {c}: {m}" for c, m in failures.items()))
    return 1 if failures else 0

