"""Text from inputs (file names, case ids, model-card fields, DICOM descriptions, error messages that quote
them) must not forge log lines: control characters, including newlines and Unicode line separators, are
shown escaped (\\n, \\x1b, \\u2028) in every log line, as the HTML reports already escape them."""

from __future__ import annotations

import logging
import re

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def neutral(text: object) -> str:
    """`text` as one printable line: control characters escaped."""
    return _CONTROL.sub(lambda m: repr(m[0])[1:-1] if m[0] not in "\u2028\u2029" else f"\\u{ord(m[0]):04x}",
                        str(text))


class NeutraliseControlCharacters(logging.Filter):
    """A handler filter: every argument of a log call that is not a number is neutralised, so only the
    format strings written in this package (never input text) can break a line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(a if isinstance(a, int | float) else neutral(a) for a in record.args)
        elif not isinstance(record.msg, str):  # log.error(exception)
            record.msg = neutral(record.msg)
        return True


def install(logger: logging.Logger | None = None) -> None:
    """Add the filter to every handler of `logger` (default: the root logger)."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, NeutraliseControlCharacters) for f in handler.filters):
            handler.addFilter(NeutraliseControlCharacters())
