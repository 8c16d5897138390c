"""Sharded batches: `pdac detect --shard K/N` writes its own likelihood file; `pdac merge` joins them.

One file per shard (not one shared file) keeps array jobs independent on shared file systems, and lets the
merge tell which shard is missing."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from pdac.errors import InputError
from pdac.infer.io import write_json_atomic

LIKELIHOODS = "pdac-likelihood.json"
_SHARD_FILE = re.compile(r"pdac-likelihood\.shard(\d+)of(\d+)\.json")


def shard_file_name(k: int, n: int) -> str:
    return f"pdac-likelihood.shard{k}of{n}.json"


def _read_likelihoods(path: Path) -> dict[str, float]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not a readable likelihood file ({e})") from None
    if not isinstance(data, dict) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and 0 <= v <= 1
            for v in data.values()):
        raise InputError(f"{path}: expected {{case: likelihood in [0, 1]}}")
    return {str(k): float(v) for k, v in data.items()}


def merge_shards(folder: Path) -> tuple[dict[str, float], int]:
    """Join every shard's likelihoods into `folder/pdac-likelihood.json`; returns (likelihoods, shard count).

    Refuses (InputError, nothing written) when shards are missing, shard counts differ, or one case has two
    different likelihoods."""
    folder = Path(folder)
    shards: dict[tuple[int, int], Path] = {}
    for path in sorted(folder.glob("pdac-likelihood.shard*of*.json")):
        match = _SHARD_FILE.fullmatch(path.name)
        if match:
            shards[(int(match[1]), int(match[2]))] = path
    if not shards:
        raise InputError(f"{folder}: no shard likelihood files (pdac-likelihood.shardKofN.json) to merge")
    counts = sorted({n for _, n in shards})
    if len(counts) > 1:
        raise InputError(f"{folder}: shard files of different runs (of {', '.join(map(str, counts))}); "
                         "keep one run's files")
    n = counts[0]
    missing = sorted(set(range(n)) - {k for k, _ in shards})
    if missing:
        names = ", ".join(shard_file_name(k, n) for k in missing[:5])
        raise InputError(f"{folder}: {len(missing)} of {n} shards missing ({names}); rerun them with --shard K/{n}")
    merged: dict[str, float] = {}
    for _, path in sorted(shards.items()):
        for case, value in _read_likelihoods(path).items():
            if case in merged and merged[case] != value:
                raise InputError(f"{folder}: case {case} has two likelihoods ({merged[case]} and {value} in "
                                 f"{path.name})")
            merged[case] = value
    write_json_atomic(dict(sorted(merged.items())), folder / LIKELIHOODS)
    return merged, n
