"""Grand Challenge entry point (PANORAMA interface).

Reads the one venous-phase CT under <input>/images/venous-ct/, writes
<output>/images/pdac-detection-map/detection_map.mha and <output>/pdac-likelihood.json.
Other files beside the scan (inputs.json, clinical information) are ignored.
"""

import argparse
import logging
import sys
import time
from pathlib import Path

from pdac.cli import setup_logging
from pdac.config import load_config
from pdac.errors import InputError, Interrupted, PdacError, UsageError, raise_on_termination_signals

log = logging.getLogger("process")


def find_scan(input_root: Path) -> Path:
    from evalutils.validators import NumberOfCasesValidator
    from pandas import DataFrame

    from pdac.infer.io import shown

    folder = input_root / "images" / "venous-ct"
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--input", type=Path, default=Path("/input"))
    parser.add_argument("--output", type=Path, default=Path("/output"))
    args = parser.parse_args(argv)
    setup_logging()
    started = time.perf_counter()
    try:
        raise_on_termination_signals()  # GC's time limit sends SIGTERM
        from pdac.infer.io import ensure_writable_dir, image_writer, json_writer, read_image, write_files_atomic
        from pdac.infer.pipeline import Pipeline
        from pdac.infer.usage import peak_memory_gb

        scan_path = find_scan(args.input)
        scan = read_image(scan_path)
        map_path = args.output / "images" / "pdac-detection-map" / "detection_map.mha"
        ensure_writable_dir(map_path.parent)
        result = Pipeline(load_config()).run(scan, scan_path.name)
        # Both outputs go to temporaries first and are renamed map, then likelihood; a failure or signal
        # removes both. Only SIGKILL between the two renames can leave a map without its likelihood. From the
        # last rename on, SIGTERM/SIGINT are ignored: the case is done and the process exits 0.
        write_files_atomic([(map_path, image_writer(result.detection_map)),
                            (args.output / "pdac-likelihood.json", json_writer(result.likelihood))], final=True)
        log.info("%s: PDAC likelihood %.4f, %d lesion candidate(s), %.1f s, peak memory %.2f GB", scan_path.name,
                 result.likelihood, len(result.lesions), time.perf_counter() - started, peak_memory_gb())
        return 0
    except (PdacError, UsageError, Interrupted) as e:
        log.error("%s", e)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
