"""`pdac evaluate`: discover -> evaluate every set -> bootstrap -> report folder."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from pdac.errors import UsageError
from pdac.evaluation.discovery import GC_LIKELIHOOD, discover, load_likelihoods
from pdac.evaluation.metrics import evaluate_sets
from pdac.evaluation.report import EvaluationReport, build_report, write_report

log = logging.getLogger(__name__)


def run_evaluation(detection_dirs: Sequence[str | Path], label_dir: str | Path, out_dir: str | Path,
                   likelihood_files: Sequence[str | Path | None] | None = None, names: Sequence[str] | None = None,
                   n_bootstrap: int = 1000, seed: int | None = 0,
                   scan_dir: str | Path | None = None) -> EvaluationReport:
    """Evaluate detection folders against `label_dir` and write the report to `out_dir`; with `scan_dir` (the
    scans), also a viewer page per case (`cases/<case>.html`), linked from report.html."""
    if n_bootstrap < 0:
        raise UsageError("--bootstrap must be >= 0")
    if scan_dir is not None and not Path(scan_dir).is_dir():
        raise UsageError(f"--scans {scan_dir}: no such folder")
    check_output_folder(out_dir, [*detection_dirs, label_dir])
    sets, labels = discover(detection_dirs, label_dir, likelihood_files, names)
    for s in sets:  # fail on bad likelihood files before the (long) evaluation
        if s.likelihoods_file:
            load_likelihoods(s.likelihoods_file, sorted(s.maps))
        elif likelihood_files is None and s.layout == "detect" and (s.folder / GC_LIKELIHOOD).is_file():
            log.info("%s: patient predictions from the maps' maxima (pass --likelihoods %s to use that file)",
                     s.name, s.folder / GC_LIKELIHOOD)
    results = evaluate_sets(sets, labels)
    for r in results:
        if len({r.metrics.case_target[c] for c in r.subjects}) < 2:
            log.warning("%s: all cases are %s; AUROC is undefined", r.name,
                        "positive" if r.metrics.num_lesions else "negative")
    report = build_report(results, str(label_dir), n_bootstrap, seed)
    links = {}
    if scan_dir is not None:
        from pdac.evaluation.case_pages import write_case_pages

        links = write_case_pages(sets, labels, Path(scan_dir), Path(out_dir), report.data)
    write_report(report, out_dir, links)
    return report


def check_output_folder(out_dir: str | Path, inputs: Sequence[str | Path]) -> None:
    """Refuse a report folder that is an input folder or lies inside one: the next run would read the
    report's files as detections or labels."""
    out = Path(out_dir).resolve()
    for folder in inputs:
        source = Path(folder).resolve()
        if out == source or source in out.parents:
            raise UsageError(f"-o {out_dir}: the report folder must not be the input folder {folder} or lie "
                             "inside it; choose another")
