"""One Grand Challenge case: the scan under <input>/images/venous-ct/, the two outputs under <output>.

`run_case` is the whole per-case path, shared by both of GC's API methods: `process.py` (exec: one process
per case, `main` below) and the invoke server (`pdac.serve.server`: models loaded once, one request per case).
Errors are `PdacError`s (and `Interrupted` on SIGTERM/SIGINT) carrying a one-line message and an exit code;
`failure` turns any exception into that pair, so both methods report a bad case identically.

    python -m pdac.serve.gc_case --input DIR --output DIR     # the same as process.py
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pdac.errors import InputError, Interrupted, PdacError, raise_on_termination_signals
from pdac.logs import setup_logging

if TYPE_CHECKING:
    from pdac.infer.pipeline import Pipeline

log = logging.getLogger("process")

SCAN_FOLDER = Path("images") / "venous-ct"
MAP_FILE = Path("images") / "pdac-detection-map" / "detection_map.mha"
LIKELIHOOD_FILE = Path("pdac-likelihood.json")
UNEXPECTED_EXIT_CODE = 1  # an exception that is not one of ours: a bug or the machine (README, exit codes)


@dataclass(frozen=True)
class CaseOutcome:
    scan: str  # the scan's file name
    likelihood: float
    lesions: int
    seconds: float


def find_scan(input_root: Path) -> Path:
    """The one .mha under <input_root>/images/venous-ct/; anything else there is ignored. Read afresh on
    every call (GC's invoke mode re-creates /input as a new symlink for each case)."""
    from evalutils.validators import NumberOfCasesValidator
    from pandas import DataFrame

    from pdac.infer.io import shown

    folder = input_root / SCAN_FOLDER
    if not folder.is_dir():
        raise InputError(f"input folder not found: {folder}")
    try:
        files = sorted(p for p in folder.iterdir() if p.is_file())
    except OSError as e:
        raise InputError(f"{folder}: cannot list the input folder ({e.strerror or e})") from None
    scans = [p for p in files if p.suffix.lower() == ".mha"]
    try:
        NumberOfCasesValidator(num_cases=1).validate(df=DataFrame({"path": scans}))
    except Exception:  # evalutils raises ValidationError with a multi-line message
        others = [shown(p.name) for p in files if p.suffix.lower() != ".mha"]
        raise InputError(f"expected exactly one .mha scan in {folder}, found {len(scans)}"
                         + (f" (other files: {', '.join(others[:5])})" if others else "")) from None
    return scans[0]


def run_case(input_root: Path, output_root: Path, pipeline: Callable[[], Pipeline], final: bool = False) -> CaseOutcome:
    """Detect PDAC in the case under `input_root` and write its two GC outputs under `output_root`.

    `pipeline` returns the loaded pipeline; it is called after the scan was found and read and the output
    folder checked, so that a bad input is refused before any model loads (exec) and the same checks come
    in the same order whether the models are already loaded (invoke) or not. Outputs are written all or
    nothing: both go to temporaries, renamed map first, then likelihood; on any failure or signal both are
    removed (only SIGKILL between the two renames can leave a map without its likelihood). `final` (exec: the
    process ends with this case): from the last rename on SIGTERM/SIGINT are ignored, so a late signal neither
    removes the complete outputs nor reports them removed, and the run exits 0."""
    from pdac.infer.io import ensure_writable_dir, image_writer, json_writer, read_image, write_files_atomic
    from pdac.infer.usage import peak_memory_gb

    started = time.perf_counter()
    scan_path = find_scan(Path(input_root))
    scan = read_image(scan_path)
    map_path = Path(output_root) / MAP_FILE
    ensure_writable_dir(map_path.parent)
    result = pipeline().run(scan, scan_path.name)
    write_files_atomic([(map_path, image_writer(result.detection_map)),
                        (Path(output_root) / LIKELIHOOD_FILE, json_writer(result.likelihood))], final=final)
    outcome = CaseOutcome(scan_path.name, result.likelihood, len(result.lesions), time.perf_counter() - started)
    log.info("%s: PDAC likelihood %.4f, %d lesion candidate(s), %.1f s, peak memory %.2f GB", outcome.scan,
             outcome.likelihood, outcome.lesions, outcome.seconds, peak_memory_gb())
    return outcome


def failure(error: BaseException) -> tuple[int, str]:
    """(exit code, one-line reason) for an exception out of `run_case` or the pipeline's start-up."""
    if isinstance(error, PdacError | Interrupted):
        return error.exit_code, str(error)
    text = " ".join(str(error).split()) or type(error).__name__
    return UNEXPECTED_EXIT_CODE, f"unexpected error: {type(error).__name__}: {text[:300]}"


def load_pipeline() -> Pipeline:
    """The pipeline with the default configuration and weights (verified, both models loaded)."""
    from pdac.config import load_config
    from pdac.infer.pipeline import Pipeline

    return Pipeline(load_config())


def main(argv=None) -> int:
    """GC's exec API method: one case, then exit (0, or the failure's exit code after its one line)."""
    parser = argparse.ArgumentParser(description="Grand Challenge entry point (exec): one case, "
                                                 "<input>/images/venous-ct/*.mha -> <output>")
    parser.add_argument("--input", type=Path, default=Path("/input"))
    parser.add_argument("--output", type=Path, default=Path("/output"))
    args = parser.parse_args(argv)
    setup_logging()
    try:
        raise_on_termination_signals()  # GC's time limit sends SIGTERM
        run_case(args.input, args.output, load_pipeline, final=True)
        return 0
    except Exception as e:  # noqa: BLE001 - a bug or the machine: its traceback, then the same one line as invoke
        if not isinstance(e, PdacError):
            log.exception("unexpected error")
        code, line = failure(e)
        log.error("%s", line)
        return code
    except Interrupted as e:
        code, line = failure(e)
        log.error("%s", line)
        return code


if __name__ == "__main__":
    sys.exit(main())
