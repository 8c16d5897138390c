"""Sharded batches: `pdac detect --shard K/N` writes its own likelihood file; `pdac merge` joins them.

One file per shard (not one shared file) keeps array jobs independent on shared file systems, and lets the
merge tell which shard is missing."""

from __future__ import annotations

import math
import re
from pathlib import Path

from pdac.errors import InputError
from pdac.infer.io import shown, write_json_atomic
from pdac.safe_read import read_json

LIKELIHOODS = "pdac-likelihood.json"
MAX_SHARDS = 10_000  # `--shard K/N` accepts N up to this; `pdac merge` reads only names within it
# Exactly the names `shard_file_name` writes: decimal numbers without leading zeros.
_SHARD_FILE = re.compile(r"pdac-likelihood\.shard(0|[1-9][0-9]{0,4})of([1-9][0-9]{0,4})\.json")


def shard_file_name(k: int, n: int) -> str:
    return f"pdac-likelihood.shard{k}of{n}.json"


def parse_shard_name(name: str) -> tuple[int, int] | None:
    """(K, N) of a name that `pdac detect --shard K/N` writes, else None."""
    match = _SHARD_FILE.fullmatch(name)
    if not match:
        return None
    k, n = int(match[1]), int(match[2])
    return (k, n) if k < n <= MAX_SHARDS else None


def _read_likelihoods(path: Path) -> dict[str, float]:
    data = read_json(path, InputError)  # a regular file (a FIFO is refused, not waited on), bounded depth
    if not isinstance(data, dict) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and 0 <= v <= 1
            for v in data.values()):
        raise InputError(f"{path}: expected {{case: likelihood in [0, 1]}}")
    return {str(k): float(v) for k, v in data.items()}


def _missing(shards: dict[tuple[int, int], Path], n: int, at_most: int = 5) -> list[int]:
    """The first few shard numbers below n without a file (the loop ends after len(shards) + at_most steps)."""
    present = {k for k, _ in shards}
    missing: list[int] = []
    k = 0
    while k < n and len(missing) < at_most:
        if k not in present:
            missing.append(k)
        k += 1
    return missing


def merge_shards(folder: Path) -> tuple[dict[str, float], int]:
    """Join every shard's likelihoods into `folder/pdac-likelihood.json`; returns (likelihoods, shard count).

    Refuses (InputError, nothing written) a shard-like name that `--shard` never writes, a file that is not
    a regular file, missing shards, shard counts that differ, or one case with two different likelihoods."""
    folder = Path(folder)
    shards: dict[tuple[int, int], Path] = {}
    for path in sorted(folder.glob("pdac-likelihood.shard*")):
        key = parse_shard_name(path.name)
        if key is None:
            raise InputError(f"{shown(path)}: not a name that `pdac detect --shard K/N` writes "
                             f"(pdac-likelihood.shardKofN.json, 0 <= K < N <= {MAX_SHARDS:,}); move it away")
        if key in shards:  # not reachable with one folder's names; kept as the rule
            raise InputError(f"{shown(path)}: shard {key[0]} of {key[1]} has two files")
        shards[key] = path
    if not shards:
        raise InputError(f"{folder}: no shard likelihood files (pdac-likelihood.shardKofN.json) to merge")
    counts = sorted({n for _, n in shards})
    if len(counts) > 1:
        raise InputError(f"{folder}: shard files of different runs (of {', '.join(map(str, counts))}); "
                         "keep one run's files")
    n = counts[0]
    if len(shards) != n:
        missing = _missing(shards, n)
        names = ", ".join(shard_file_name(k, n) for k in missing)
        raise InputError(f"{folder}: {n - len(shards)} of {n} shards missing ({names}); rerun them with "
                         f"--shard K/{n}")
    merged: dict[str, float] = {}
    for _, path in sorted(shards.items()):
        for case, value in _read_likelihoods(path).items():
            if case in merged and merged[case] != value:
                raise InputError(f"{folder}: case {shown(case)} has two likelihoods ({merged[case]} and {value} in "
                                 f"{path.name})")
            merged[case] = value
    write_json_atomic(dict(sorted(merged.items())), folder / LIKELIHOODS)
    return merged, n
