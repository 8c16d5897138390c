"""Logging set-up shared by every entry point (`pdac`, process.py, the invoke server)."""

from __future__ import annotations

import logging
import sys

# Third-party loggers kept at WARNING. torch's are filtered at the handler instead of by level: importing
# torch resets its loggers' levels, and its exit hooks log at INFO (e.g. FakeTensor cache stats) after the
# entry point's one-line error, which must stay the last stderr line (what Grand Challenge shows).
QUIET = ("matplotlib", "PIL", "numexpr", "pynetdicom", "highdicom", "pydicom")
FILTERED = ("torch",)


def _not_third_party_chatter(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or record.name.split(".")[0] not in FILTERED


def setup_logging(verbose: bool = False) -> None:
    """Logs go to stderr; third-party chatter is kept at WARNING."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", force=True)
    for noisy in QUIET:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_not_third_party_chatter)
    from pdac.log_safety import install

    install()  # input text in log arguments cannot forge lines (control characters escaped)
