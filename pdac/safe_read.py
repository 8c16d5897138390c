"""Reading small structured files that come from users: regular files only (a FIFO or device is refused
without blocking), a bounded size, and a bounded nesting depth (Python's JSON and TOML parsers recurse, so
a deeply nested file would otherwise end in RecursionError). Every refusal is one line, raised as the
caller's error class (its exit code)."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import numpy as np

from pdac.errors import InputError, PdacError

MAX_DEPTH = 64  # far beyond any file this package reads (a plans.json is about 6 levels deep)
MAX_BYTES = 256 * 1024 * 1024  # a likelihood file of a million cases is about 50 MB
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def read_regular_file(path: Path | str, error: type[PdacError] = InputError, max_bytes: int = MAX_BYTES) -> bytes:
    """The bytes of a regular file (symlinks followed). A FIFO, socket or device is refused before anything
    is read from it (opened non-blocking, checked with fstat), and so is a file over `max_bytes`."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise error(f"{path}: cannot open ({e.strerror or e})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{path}: not a regular file")
        if info.st_size > max_bytes:
            raise error(f"{path}: {info.st_size:,} bytes exceeds the limit of {max_bytes:,} for this kind of file")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise error(f"{path}: cannot read ({e.strerror or e})") from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise error(f"{path}: exceeds the limit of {max_bytes:,} bytes for this kind of file")
    return data


def nesting_depth(text: bytes | str) -> int:
    """The deepest nesting of [ ] and { } outside JSON strings (an upper bound for TOML too)."""
    data = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text
    bare = np.frombuffer(_JSON_STRING.sub(b'""', data), dtype=np.uint8)
    if bare.size == 0:
        return 0
    steps = np.isin(bare, (ord("["), ord("{"))).astype(np.int64) - np.isin(bare, (ord("]"), ord("}")))
    return int(np.cumsum(steps).max(initial=0))


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def check_depth(text: bytes | str, where: str, error: type[PdacError] = InputError, max_depth: int = MAX_DEPTH):
    """Refuse (one line) text nested deeper than `max_depth`."""
    depth = nesting_depth(text)
    if depth > max_depth:
        raise error(f"{where}: nested {depth} levels deep, more than the limit of {max_depth}")


def loads_json(text: bytes | str, where: str, error: type[PdacError] = InputError, max_depth: int = MAX_DEPTH):
    """Parse strict JSON (NaN and Infinity refused) nested at most `max_depth` deep; refuse in one line."""
    check_depth(text, where, error, max_depth)
    try:
        return json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        detail = re.sub(r"\s+", " ", str(e))[:120]
        raise error(f"{where}: not valid JSON ({detail})") from None


def read_json(path: Path | str, error: type[PdacError] = InputError, max_bytes: int = MAX_BYTES,
              max_depth: int = MAX_DEPTH):
    """`loads_json` of a regular file (see `read_regular_file`)."""
    return loads_json(read_regular_file(path, error, max_bytes), str(path), error, max_depth)


MAX_FOLDER_DEPTH = 32  # a PACS export is about 5 levels deep (patient / study / series / ...)


def walk(root: Path | str, error: type[PdacError] = InputError, max_depth: int = MAX_FOLDER_DEPTH, onerror=None):
    """os.walk (top-down, symlinked folders listed but not entered; the caller may prune `dirnames` in
    place), without recursion and refusing (`error`, one line) folders nested deeper than `max_depth`
    below `root`, instead of Python's RecursionError on a very deep tree."""
    stack = [(os.fspath(root), 0)]
    while stack:
        top, depth = stack.pop()
        try:
            with os.scandir(top) as it:
                entries = list(it)
        except OSError as e:
            if onerror is not None:
                onerror(e)
            continue
        dirs, files = [], []
        for entry in entries:
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            (dirs if is_dir else files).append(entry.name)
        yield top, dirs, files
        entered = [d for d in dirs if not os.path.islink(os.path.join(top, d))]
        if entered and depth >= max_depth:
            raise error(f"{root}: folders nested more than {max_depth} levels deep (at {top}); refusing to "
                        "search further")
        stack.extend((os.path.join(top, d), depth + 1) for d in reversed(entered))
