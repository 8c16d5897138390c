"""`pdac detect`: the pipeline over a batch of scans, models loaded once, one output set per case."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from pdac.config import PipelineConfig
from pdac.errors import OutputError, PdacError, SendError, UsageError
from pdac.infer.detect_report import DetectReport
from pdac.infer.dicom import DicomSeries, ScanFile, find_cases
from pdac.infer.io import (
    case_id,
    ensure_writable_dir,
    image_writer,
    json_writer,
    merge_json_object,
    shown,
    utf8_name,
    write_files_atomic,
)
from pdac.infer.plausibility import pancreas_note
from pdac.infer.provenance import overlay_label
from pdac.infer.shards import LIKELIHOODS, MAX_SHARDS, shard_file_name
from pdac.infer.usage import peak_memory_gb

if TYPE_CHECKING:
    from pdac.infer.dicom_out import DicomOut

log = logging.getLogger(__name__)



def parse_shard(text: str) -> tuple[int, int]:
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard expects K/N (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= k < n or n > MAX_SHARDS:
        raise UsageError(f"--shard {text}: need 0 <= K < N <= {MAX_SHARDS:,}")
    return k, n


def unusable_name(path: Path) -> str | None:
    """Why a scan's file name cannot name a case (None when it can)."""
    if not utf8_name(path):
        return "file name is not valid UTF-8 (rename it); skipped"
    if not case_id(path):
        return "file name gives an empty case id (nothing before _0000 and the extension); skipped"
    return None


def _check_merge_target(path: Path) -> None:
    """Refuse, before any work, a likelihood file that the per-case merges could not update."""
    from pdac.safe_read import read_json

    if path.exists() or path.is_symlink():
        try:
            ok = isinstance(read_json(path, OutputError), dict)  # a FIFO is refused, not waited on
        except OutputError:
            ok = False
        if not ok:
            raise OutputError(f"{path}: exists but is not a readable JSON object; cannot merge into it")


def detect_batch(inputs: list[str], out: Path, config: PipelineConfig, weights: str | None,
                 overlays: bool = False, shard: tuple[int, int] | None = None, report: bool = False,
                 viewer: bool = True, dicom: DicomOut | None = None) -> int:
    """Run every scan; a failing case is reported and skipped. Returns the exit code (1 if any failed, else 6
    if DICOM outputs did not all arrive at the `dicom` destination). With `report`, report.html is written when
    the loop ends, however it ends (Ctrl-C included), and (with `viewer`) each case's viewer page
    `cases/<case>.html` as the case finishes. With `dicom`, each DICOM series also gets a SEG and an SR (in its
    set of files), sent to an archive if `dicom.destination` (checked before any work).

    A case's outputs (map, lesion list, overlay) are written as a set, all or nothing; its likelihood is
    then merged into the batch's likelihood file under a file lock, so several runs (shards) can write to
    one output folder at the same time without dropping each other's cases."""
    from pdac.infer.pipeline import Pipeline

    for folder in inputs:  # the next run would read this run's detection maps as scans
        if Path(folder).is_dir() and Path(folder).resolve() == out.resolve():
            raise UsageError(f"-o {out}: the output folder must not be an input folder; choose another")
    found = find_cases([Path(p) for p in inputs])  # image files and DICOM series
    failures: dict[str, str] = {}
    usable = []
    for source in found:
        reason = unusable_name(source.path) if isinstance(source, ScanFile) else None
        if reason:
            failures[shown(source.path.name)] = reason
            log.error("%s: %s", shown(source.path), reason)
        else:
            usable.append(source)
    ids = [s.case_id for s in usable]
    duplicates = sorted({c for c in ids if ids.count(c) > 1})
    if duplicates:
        raise UsageError(f"several inputs map to the same case id: {', '.join(duplicates[:5])}")
    scans = usable
    if shard:
        k, n = shard
        scans = scans[k::n]
    if not usable and not failures:
        raise UsageError("no input scans found (expected .mha, .nii.gz, .nii or .mhd files or DICOM series)")
    if dicom and scans and not any(isinstance(s, DicomSeries) for s in scans):
        raise UsageError("--dicom-out/--send: none of the inputs is a DICOM series")
    ensure_writable_dir(out)
    if dicom:
        dicom.check_destination()  # before the models are loaded: a refusal costs seconds, not a batch
    likelihood_file = out / (LIKELIHOODS if not shard else shard_file_name(*shard))
    _check_merge_target(likelihood_file)
    if shard and not scans:  # more shards than cases: this one still leaves its (empty) file for `pdac merge`
        merge_json_object(likelihood_file, {})
        log.info("shard %d/%d: no cases (%d in all); wrote an empty %s", *shard, len(usable), likelihood_file.name)
    pipeline = Pipeline(config, weights) if scans else None
    done = 0
    html = DetectReport(out, pipeline.weights_dir, len(scans), shard, viewer) if report and pipeline else None
    try:
        for source in tqdm(scans, desc="detect", unit="scan"):
            case = source.case_id
            t0 = time.perf_counter()
            if html:
                html.begin(case)
            try:
                scan = source.read()
                headers = dicom.source_headers(source, scan) if dicom else None
                result = pipeline.run(scan, case)
                record = {
                    "case": case,
                    "likelihood": result.likelihood,
                    "pancreas_found": result.pancreas_found,
                    "crop_index_xyz": {"start": list(result.crop.start), "size": list(result.crop.size)},
                    "lesions": [dataclasses.asdict(le) for le in result.lesions],
                    "weights": str(pipeline.weights_dir),
                    "pancreas": result.pancreas,  # stage-1 plausibility
                    "provenance": pipeline.provenance,  # model card, manifest SHA-256, pdac version, configuration
                }
                outputs = [
                    (out / f"{case}_detection_map.mha", image_writer(result.detection_map)),
                    (out / f"{case}_lesions.json", json_writer(record)),
                ]
                if overlays:
                    from pdac.infer.overlay import save_detection_overlay

                    title = f"{case}: PDAC likelihood {result.likelihood:.3f}{pancreas_note(result.pancreas)}"
                    outputs.append((out / f"{case}_overlay.png", lambda tmp, scan=scan, result=result, title=title:
                                    save_detection_overlay(scan, result.detection_map, Path(tmp), title,
                                                           banner=overlay_label(pipeline.provenance))))
                if headers is not None:
                    outputs += dicom.writers(out, case, headers, result, record)
                write_files_atomic(outputs)
                try:
                    merge_json_object(likelihood_file, {case: result.likelihood})
                except BaseException:
                    for target, _ in outputs:  # a case without its likelihood would be half written
                        target.unlink(missing_ok=True)
                    raise
                done += 1
                if headers is not None:
                    dicom.send(case, [p for p, _ in outputs if p.suffix == ".dcm"])
                if html:
                    html.add(case, scan, result.detection_map, record, result.pancreas_mask)
                log.info("%s: likelihood %.3f, %d lesion candidate(s), %.1f s (%s), peak memory %.2f GB", case,
                         result.likelihood, len(result.lesions), time.perf_counter() - t0,
                         ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items()), peak_memory_gb())
            except PdacError as e:
                failures[case] = str(e)
                log.error("%s: %s", case, e)
            except Exception as e:  # noqa: BLE001 - one bad case must not stop the batch
                failures[case] = f"{type(e).__name__}: {e}"
                log.exception("%s: unexpected error", case)
    finally:  # also on Ctrl-C or SIGTERM: the report shows the cases done so far
        if html:
            html.finish(failures)
    log.info("done: %d ok, %d failed", done, len(failures))
    for case, message in failures.items():  # one line each (case ids and messages come from inputs)
        log.info("  %s: %s", case, message)
    sent_ok = dicom.finish() if dicom else True
    return 1 if failures else (0 if sent_ok else SendError.exit_code)
