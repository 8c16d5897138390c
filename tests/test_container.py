"""The container smoke test (test.sh): builds the image, runs it on test/input under GC's runtime
contract (offline, read-only input, non-root, empty /tmp) and compares the outputs with test/output.
Slow (image build); run with `make test-slow`. Needs docker, podman or buildah."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def test_container_smoke():
    if not any(shutil.which(e) for e in ("docker", "podman", "buildah")):
        pytest.skip("no container engine (docker, podman or buildah)")
    if not (REPO / "test" / "output" / "pdac-likelihood.json").is_file():
        pytest.fail("test/output (expected outputs) missing")
    args = [str(REPO / "test.sh")]
    if os.environ.get("PDAC_TEST_MODEL_MOUNT", "1") == "1":
        args.append("--model-mount")
    r = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=30 * 60)
    assert r.returncode == 0, (r.stdout + r.stderr)[-6000:]
    assert "test.sh: PASS" in r.stderr
