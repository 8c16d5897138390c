"""Static checks of the container files (fast, no container engine): hadolint and shellcheck clean,
and the Dockerfile keeps the Grand Challenge contract (pinned base, non-root user, entry point)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = ["build.sh", "export.sh", "test.sh"]


def tool(name: str) -> str:
    """A tool installed with the test interpreter (requirements-dev.txt), else from PATH."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.is_file() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} not found: install the dev requirements (make install-dev)")
    return found


def shell_files() -> list[str]:
    helpers = [*(REPO / "scripts").glob("*.sh"), *(REPO / "tests").glob("*.sh")]
    files = SCRIPTS + [".ci/run"] + sorted(p.relative_to(REPO).as_posix() for p in helpers)
    return [f for f in files if (REPO / f).is_file()]


def test_hadolint_clean():
    r = subprocess.run([tool("hadolint"), "--no-color", "Dockerfile"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_shellcheck_clean():
    files = shell_files()
    assert set(SCRIPTS) <= set(files)
    r = subprocess.run([tool("shellcheck"), *files], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_executable(script):
    assert os.access(REPO / script, os.X_OK), f"{script} is not executable"


def test_dockerfile_contract():
    text = (REPO / "Dockerfile").read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    # A pinned, overridable base: ARG BASE_IMAGE=<repo>:<tag> before FROM ${BASE_IMAGE}.
    assert re.fullmatch(r"ARG BASE_IMAGE=\S+:\S+", lines[0]) and "latest" not in lines[0], lines[0]
    assert lines[1] == "FROM ${BASE_IMAGE}"
    # The base's torch is kept: requirements are installed against a constraint on it.
    assert re.search(r"pip install .*-r /opt/app/requirements.txt -c /opt/app/constraints.txt", text)
    # Runs as a non-root user; the entry point is GC's API method's, chosen at build time: invoke by default.
    users = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
    assert users and users[-1] not in ("root", "0"), users
    entrypoints = [ln for ln in lines if ln.startswith("ENTRYPOINT ")]
    assert entrypoints == ['ENTRYPOINT ["python", "-m", "pdac.serve.entrypoint"]'], entrypoints
    assert "ARG API_METHOD=invoke" in lines
    assert 'LABEL org.grand-challenge.api-method="${API_METHOD}"' in lines
    assert "ENV PDAC_API_METHOD=${API_METHOD}" in lines
    assert lines.index("ARG API_METHOD=invoke") > max(i for i, ln in enumerate(lines) if "pip install" in ln), \
        "API_METHOD after the dependencies' layer, so that both methods share it"
    # Everything that writes at run time is pointed into /tmp; nnU-Net's folders are set.
    for var in ("HOME", "MPLCONFIGDIR", "XDG_CACHE_HOME", "TORCH_HOME", "nnUNet_raw", "nnUNet_preprocessed",
                "nnUNet_results"):
        assert re.search(rf"\b{var}=/tmp\b", text), var


def test_dockerignore_keeps_context_small():
    patterns = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]
    # An allow-list: everything excluded, then only what the image needs let back in.
    assert patterns[0] == "*"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    assert {"pdac", "process.py", "resources", "weights", "requirements.txt", "pyproject.toml"} <= allowed
    assert not allowed & {".venv", ".git", "work", "demo-output", "tests", "test"}
