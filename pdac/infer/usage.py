"""Resource use of this process, for the logs (time and memory of every case)."""

from __future__ import annotations

import resource
import sys


def peak_memory_gb() -> float:
    """Peak resident memory of this process so far, in GB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024**3 if sys.platform == "darwin" else 1024**2)
