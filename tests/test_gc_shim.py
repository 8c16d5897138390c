"""process.py under Grand Challenge's own runtime wrapper, sagemaker-shim from PyPI, against a local S3
(moto's server on 127.0.0.1): inputs, model tarball and environment laid out as GC provisions them,
the entry point, user and environment read from the Dockerfile (tests/gc_job.py, tests/gc_sandbox.sh).

Needs root (a private mount namespace whose root is a throw-away overlay of /) and the shim's venv,
which `make shim-env` (part of `make test`) creates from a Python 3.12; without one this is skipped.
One job takes about a minute on 2 cores.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import REPO, TEST_INPUT, TEST_OUTPUT, WEIGHTS, assert_valid_detection_map

SHIM_VENV = REPO / ".venv-shim"
GC_JOB = REPO / "tests" / "gc_job.py"
MAP = "images/pdac-detection-map/detection_map.mha"
LIKELIHOOD = "pdac-likelihood.json"
WEIGHTS_EXIT_CODE = 4  # README, "Exit codes and failure messages"


def _why_skip() -> str | None:
    if os.geteuid() != 0:
        return "needs root (mount namespace, chroot and the image's user)"
    if not (SHIM_VENV / ".installed").is_file():
        return ("sagemaker-shim is not installed: `make shim-env` installs it into .venv-shim; it needs "
                "Python 3.12 (python3.12 on PATH or under ~/.pyenv/versions, or SHIM_PYTHON=...)")
    missing = [t for t in ("unshare", "chroot", "useradd") if not shutil.which(t)]
    return f"needs {', '.join(missing)}" if missing else None


pytestmark = pytest.mark.skipif(_why_skip() is not None, reason=_why_skip() or "")


@dataclass(frozen=True)
class ImageConfig:
    entrypoint: list[str]
    cmd: list[str] | None
    user: str
    home: str
    workdir: str
    env: dict[str, str]


def dockerfile_config(text: str) -> ImageConfig:
    """ENTRYPOINT, CMD, USER, WORKDIR, ENV and the user's home (its useradd) of a one-stage Dockerfile."""
    logical, pending = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    entrypoint, cmd, user, workdir, home, env = None, None, None, "/", None, {}
    for instruction in logical:
        keyword, _, args = instruction.partition(" ")
        keyword = keyword.upper()
        if keyword == "ENTRYPOINT":
            entrypoint = json.loads(args)
        elif keyword == "CMD":
            cmd = json.loads(args)
        elif keyword == "USER":
            user = args.strip()
        elif keyword == "WORKDIR":
            workdir = args.strip()
        elif keyword == "ENV":
            env.update(token.split("=", 1) for token in shlex.split(args))
        elif keyword == "RUN" and "useradd" in args:
            words = shlex.split(args.split("useradd", 1)[1])
            home = words[words.index("--home-dir") + 1]
    assert entrypoint and user and home, "Dockerfile: exec-form ENTRYPOINT, USER and useradd --home-dir expected"
    return ImageConfig(entrypoint, cmd, user, home, workdir, env)


def host_job_args(config: ImageConfig) -> list[str]:
    """gc_job.py's arguments for the image run from this checkout: the image's WORKDIR (where the
    Dockerfile copies the repo) is the repo, and `python` is the test interpreter."""
    def here(value: str) -> str:
        return value.replace(config.workdir, str(REPO)) if config.workdir != "/" else value

    env = {k: here(v) for k, v in config.env.items()}
    env["PATH"] = f"{Path(sys.executable).parent}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    args = ["--entrypoint", json.dumps([here(a) for a in config.entrypoint]), "--cmd", json.dumps(config.cmd),
            "--user", config.user, "--home", config.home, "--workdir", str(REPO), "--open", sys.executable]
    for key, value in env.items():
        args += ["--env", f"{key}={value}"]
    return args


@dataclass(frozen=True)
class Job:
    folder: Path
    shim_exit: int
    result: dict  # the shim's inference_result.json
    setup_result: dict  # its runtime_setup_result.json

    @property
    def log_tail(self) -> str:
        return "\n".join((self.folder / "shim.log").read_text().splitlines()[-40:])

    def output_files(self) -> set[str]:
        out = self.folder / "output"
        return {p.relative_to(out).as_posix() for p in out.rglob("*")
                if p.is_file() and not p.relative_to(out).as_posix().startswith(".sagemaker_shim/")}

    def signature_valid(self) -> bool:
        job = json.loads((self.folder / "job.json").read_text())
        content = (self.folder / "output" / ".sagemaker_shim" / "inference_result.json").read_bytes()
        expected = hmac.new(bytes.fromhex(job["signing_key_hex"]), content, hashlib.sha256).hexdigest()
        metadata = json.loads((self.folder / "metadata.json").read_text())
        return metadata["output"][".sagemaker_shim/inference_result.json"].get("signature_hmac_sha256") == expected


def run_gc_job(folder: Path, model: Path) -> Job:
    config = dockerfile_config((REPO / "Dockerfile").read_text())
    cmd = [str(SHIM_VENV / "bin" / "python"), str(GC_JOB), "--input", str(TEST_INPUT), "--model", str(model),
           "--out", str(folder), "--timeout", "600", *host_job_args(config)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert r.returncode == 0 and (folder / "output" / ".sagemaker_shim" / "inference_result.json").is_file(), (
        f"gc_job.py exit {r.returncode}\n{r.stderr[-3000:]}\n"
        + ((folder / "shim.log").read_text()[-3000:] if (folder / "shim.log").is_file() else ""))
    result = json.loads((folder / "output" / ".sagemaker_shim" / "inference_result.json").read_text())
    setup = json.loads((folder / "runtime_output" / ".sagemaker_shim" / "runtime_setup_result.json").read_text())
    return Job(folder, r.returncode, result, setup)


def export_model(weights: Path, outdir: Path) -> Path:
    """model.tar.gz as a user uploads it to GC: export.sh (the weights folder's contents at the root)."""
    r = subprocess.run([str(REPO / "export.sh"), "--model-only", str(outdir)], capture_output=True, text=True,
                       env={**os.environ, "WEIGHTS_DIR": str(weights)}, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    return outdir / "model.tar.gz"


def test_job_under_the_shim_uploads_the_expected_outputs(tmp_path):
    job = run_gc_job(tmp_path / "job", export_model(WEIGHTS, tmp_path))

    assert job.setup_result["return_code"] == 0, job.log_tail
    assert job.result["return_code"] == 0, "\n".join(job.result["user_process_last_stderr_lines"][-5:])
    assert job.result["user_safe_error_message"] == ""
    assert job.signature_valid(), "inference_result.json's HMAC signature does not match"
    assert {o["relative_path"] for o in job.result["outputs"]} == {MAP, LIKELIHOOD}
    assert job.output_files() == {MAP, LIKELIHOOD}

    likelihood = json.loads((job.folder / "output" / LIKELIHOOD).read_text())
    assert isinstance(likelihood, float) and 0 <= likelihood <= 1
    assert likelihood == pytest.approx(json.loads((TEST_OUTPUT / LIKELIHOOD).read_text()), abs=0.02)
    scan = sitk.ReadImage(str(next((TEST_INPUT / "images" / "venous-ct").glob("*.mha"))))
    got = assert_valid_detection_map(sitk.ReadImage(str(job.folder / "output" / MAP)), scan)
    expected = sitk.GetArrayFromImage(sitk.ReadImage(str(TEST_OUTPUT / MAP)))
    assert got.shape == expected.shape
    assert np.abs(got.astype(np.float64) - expected).max() < 0.05


def test_broken_model_tarball_fails_the_task_with_the_weights_error(tmp_path):
    weights = tmp_path / "weights"
    shutil.copytree(WEIGHTS, weights)
    manifest = json.loads((weights / "manifest.json").read_text())
    checkpoint = sorted(name for name in manifest["files"] if name.endswith(".pth"))[0]
    manifest["files"][checkpoint] = "0" * 64
    (weights / "manifest.json").write_text(json.dumps(manifest))

    job = run_gc_job(tmp_path / "job", export_model(weights, tmp_path))

    assert job.setup_result["return_code"] == 0, job.log_tail
    assert job.result["return_code"] == WEIGHTS_EXIT_CODE, job.log_tail
    # What the GC user sees: the last non-empty stderr line.
    last = [line.strip() for line in job.result["user_process_last_stderr_lines"] if line.strip()][-1]
    assert f"/opt/ml/model/{checkpoint}" in last and "weights" in last, last
    assert job.result["outputs"] == [] and job.output_files() == set()
    assert job.signature_valid()
