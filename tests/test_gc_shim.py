"""The image's entry point under Grand Challenge's own runtime wrapper, sagemaker-shim from PyPI, against a local
S3 (moto's server on 127.0.0.1): inputs, model tarball and environment laid out as GC provisions them, the entry
point, user, environment and API method (label) read from the Dockerfile (tests/gc_job.py, tests/gc_sandbox.sh).
Both of GC's API methods: exec (built with API_METHOD=exec: one process per task) and invoke (the default
image: one warm server, several tasks in one shim run).

Needs root (a private mount namespace whose root is a throw-away overlay of /) and the shim's venv,
which `make shim-env` (part of `make test`) creates from a Python 3.12; without one this is skipped.
One job takes one to three minutes on 2 cores.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import (
    REPO,
    TEST_INPUT,
    TEST_OUTPUT,
    WEIGHTS,
    assert_valid_detection_map,
    process,
    weights_with_a_forged_hash,
)

SHIM_VENV = REPO / ".venv-shim"
GC_JOB = REPO / "tests" / "gc_job.py"
MAP = "images/pdac-detection-map/detection_map.mha"
LIKELIHOOD = "pdac-likelihood.json"
WEIGHTS_EXIT_CODE = 4  # docs/errors.md


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
    labels: dict[str, str]

    @property
    def api_method(self) -> str:
        """As GC reads it from the label: case-insensitive, no label means exec."""
        return self.labels.get("org.grand-challenge.api-method", "exec").lower()


def dockerfile_config(text: str, build_args: dict[str, str] | None = None) -> ImageConfig:
    """ENTRYPOINT, CMD, USER, WORKDIR, ENV, LABEL and the user's home (its useradd) of a one-stage Dockerfile,
    with its ARGs (defaults, or `build_args` as `--build-arg` gives them) substituted in ENV and LABEL values."""
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
    entrypoint, cmd, user, workdir, home, env, labels, arg_values = None, None, None, "/", None, {}, {}, {}

    def substituted(value: str) -> str:
        return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: arg_values.get(m[1] or m[2], ""), value)

    for instruction in logical:
        keyword, _, args = instruction.partition(" ")
        keyword = keyword.upper()
        if keyword == "ARG":
            name, _, default = args.strip().partition("=")
            arg_values[name] = (build_args or {}).get(name, default)
        elif keyword == "LABEL":
            labels.update((k, substituted(v)) for k, v in (token.split("=", 1) for token in shlex.split(args)))
        elif keyword == "ENTRYPOINT":
            entrypoint = json.loads(args)
        elif keyword == "CMD":
            cmd = json.loads(args)
        elif keyword == "USER":
            user = args.strip()
        elif keyword == "WORKDIR":
            workdir = args.strip()
        elif keyword == "ENV":
            env.update((k, substituted(v)) for k, v in (token.split("=", 1) for token in shlex.split(args)))
        elif keyword == "RUN" and "useradd" in args:
            words = shlex.split(args.split("useradd", 1)[1])
            home = words[words.index("--home-dir") + 1]
    assert entrypoint and user and home, "Dockerfile: exec-form ENTRYPOINT, USER and useradd --home-dir expected"
    return ImageConfig(entrypoint, cmd, user, home, workdir, env, labels)


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


RESULT = Path(".sagemaker_shim") / "inference_result.json"


@dataclass(frozen=True)
class Job:
    folder: Path
    shim_exit: int
    results: list[dict | None]  # each task's inference_result.json (None: the task never ran)
    setup_result: dict  # the shim's runtime_setup_result.json

    @property
    def result(self) -> dict | None:
        return self.results[0]

    @property
    def log_tail(self) -> str:
        return "\n".join((self.folder / "shim.log").read_text().splitlines()[-40:])

    def user_stderr(self) -> list[str]:
        """The entry point's stderr lines, in order, as the shim logged them (its own lines left out)."""
        records = [json.loads(ln) for ln in (self.folder / "shim.log").read_text().splitlines() if ln.startswith("{")]
        # the shim logs the child's stderr lines at WARNING, not internal; its own user-facing errors at ERROR
        return [r["log"] for r in records
                if r.get("internal") is False and r.get("source") == "stderr" and r.get("level") == "WARNING"]

    def output(self, task: int = 0) -> Path:
        return self.folder / ("output" if task == 0 else f"output-{task}")

    def output_files(self, task: int = 0) -> set[str]:
        out = self.output(task)
        return {p.relative_to(out).as_posix() for p in out.rglob("*")
                if p.is_file() and not p.relative_to(out).as_posix().startswith(".sagemaker_shim/")}

    def signature_valid(self, task: int = 0) -> bool:
        job = json.loads((self.folder / "job.json").read_text())
        content = (self.output(task) / RESULT).read_bytes()
        expected = hmac.new(bytes.fromhex(job["signing_key_hex"]), content, hashlib.sha256).hexdigest()
        metadata = json.loads((self.folder / "metadata.json").read_text())
        name = self.output(task).name
        return metadata[name][RESULT.as_posix()].get("signature_hmac_sha256") == expected


def run_gc_job(folder: Path, model: Path, inputs: list[Path] | None = None, api_method: str = "exec",
               health_timeout: int | None = None) -> Job:
    """One shim run of the tasks `inputs` (default: the GC sample) on the image built with `API_METHOD=api_method`;
    GC's API method is what that image's label says."""
    config = dockerfile_config((REPO / "Dockerfile").read_text(), {"API_METHOD": api_method})
    assert config.api_method == api_method and config.env["PDAC_API_METHOD"] == api_method
    inputs = inputs or [TEST_INPUT]
    cmd = [str(SHIM_VENV / "bin" / "python"), str(GC_JOB), *(a for i in inputs for a in ("--input", str(i))),
           "--model", str(model), "--out", str(folder), "--timeout", "600", "--api-method", config.api_method,
           *(["--health-timeout", str(health_timeout)] if health_timeout else []), *host_job_args(config)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600 * len(inputs) + 900, cwd=REPO)
    setup_file = folder / "runtime_output" / RESULT.parent / "runtime_setup_result.json"
    assert r.returncode == 0 and setup_file.is_file(), (
        f"gc_job.py exit {r.returncode}\n{r.stderr[-3000:]}\n"
        + ((folder / "shim.log").read_text()[-3000:] if (folder / "shim.log").is_file() else ""))
    outputs = [folder / ("output" if i == 0 else f"output-{i}") / RESULT for i in range(len(inputs))]
    results = [json.loads(f.read_text()) if f.is_file() else None for f in outputs]
    return Job(folder, r.returncode, results, json.loads(setup_file.read_text()))


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
    weights, checkpoint = weights_with_a_forged_hash(tmp_path / "weights")

    job = run_gc_job(tmp_path / "job", export_model(weights, tmp_path))

    assert job.setup_result["return_code"] == 0, job.log_tail
    assert job.result["return_code"] == WEIGHTS_EXIT_CODE, job.log_tail
    # What the GC user sees: the last non-empty stderr line.
    last = [line.strip() for line in job.result["user_process_last_stderr_lines"] if line.strip()][-1]
    assert f"/opt/ml/model/{checkpoint}" in last and "weights" in last, last
    assert job.result["outputs"] == [] and job.output_files() == set()
    assert job.signature_valid()


# --- invoke: the default image, one warm server for all tasks of a shim run ---------------------------------
LOADED = "models loaded in"  # pdac.serve.server, once per start-up


def gc_input(folder: Path, scan: Path | bytes) -> Path:
    """A GC input folder: the scan (a file copied, or bytes) under images/venous-ct/, and inputs.json."""
    (folder / "images" / "venous-ct").mkdir(parents=True)
    target = folder / "images" / "venous-ct" / (scan.name if isinstance(scan, Path) else "broken.mha")
    shutil.copyfile(scan, target) if isinstance(scan, Path) else target.write_bytes(scan)
    shutil.copyfile(TEST_INPUT / "inputs.json", folder / "inputs.json")
    return folder


def last_line(lines: list[str]) -> str:
    return [ln.strip() for ln in lines if ln.strip()][-1]


def message(line: str) -> str:
    """`HH:MM:SS LEVEL logger: message` -> message."""
    return line.split(": ", 1)[1]


def test_invoke_tasks_in_one_shim_run_share_one_server(tmp_path, phantom_scans):
    cases = [TEST_INPUT,
             gc_input(tmp_path / "phantom1", phantom_scans["identity"]),
             gc_input(tmp_path / "phantom2", phantom_scans["flipped"]),
             gc_input(tmp_path / "broken", b"this is not a MetaImage\n" * 8),
             gc_input(tmp_path / "phantom3", phantom_scans["oblique"])]
    job = run_gc_job(tmp_path / "job", export_model(WEIGHTS, tmp_path), cases, api_method="invoke")

    assert job.setup_result["return_code"] == 0, job.log_tail
    # 1-3: three good cases, each uploaded and matching (the sample: test/output; the phantoms: process.py)
    for i, case in enumerate(cases[:3]):
        result = job.results[i]
        assert result is not None and result["return_code"] == 0, (i, job.log_tail)
        assert result["invoke_duration"] is not None and result["exec_duration"] is None
        assert {o["relative_path"] for o in result["outputs"]} == {MAP, LIKELIHOOD}
        assert job.output_files(i) == {MAP, LIKELIHOOD} and job.signature_valid(i)
        reference = TEST_OUTPUT if case == TEST_INPUT else tmp_path / f"exec-{i}"
        if case != TEST_INPUT:
            assert process(case, reference, timeout=1800).returncode == 0
        got_likelihood = json.loads((job.output(i) / LIKELIHOOD).read_text())
        assert got_likelihood == pytest.approx(json.loads((reference / LIKELIHOOD).read_text()), abs=0.02)
        scan = sitk.ReadImage(str(next((case / "images" / "venous-ct").glob("*.mha"))))
        got = assert_valid_detection_map(sitk.ReadImage(str(job.output(i) / MAP)), scan)
        expected = sitk.GetArrayFromImage(sitk.ReadImage(str(reference / MAP)))
        assert np.abs(got.astype(np.float64) - expected).max() < 0.05
    # the models were loaded once, for all of them
    assert sum(LOADED in line for line in job.user_stderr()) == 1, job.log_tail

    # 4: the broken case fails the task with process.py's one line as the server's last stderr line ...
    broken = job.results[3]
    assert broken is not None and broken["return_code"] == 1 and broken["outputs"] == [], job.log_tail
    exec_run = process(cases[3], tmp_path / "exec-broken", timeout=1800)
    assert exec_run.returncode == 3
    reason = message(last_line(exec_run.stderr.splitlines())).replace(str(cases[3]), "/input")  # as GC's path
    assert message(last_line(broken["user_process_last_stderr_lines"])) == reason, job.log_tail
    assert job.output_files(3) == set() and job.signature_valid(3)
    # 5: ... and stops the run: the shim never sends the next one
    assert job.results[4] is None


def test_invoke_broken_model_tarball_fails_the_setup_with_the_servers_reason(tmp_path):
    weights, checkpoint = weights_with_a_forged_hash(tmp_path / "weights")

    # the shim's start-and-health cap lowered from GC's 300 s: a server that died is only noticed at the cap
    job = run_gc_job(tmp_path / "job", export_model(weights, tmp_path), api_method="invoke", health_timeout=240)

    assert job.setup_result["return_code"] == 1, job.log_tail
    assert "health check" in job.setup_result["user_safe_error_message"], job.setup_result
    assert job.results == [None]  # no task ran
    shim_log = (job.folder / "shim.log").read_text()
    assert "Health endpoint returned status code 200" not in shim_log and LOADED not in shim_log
    # What the GC user sees: the server's last stderr line, the weights error naming the mounted file
    last = last_line(job.user_stderr())
    assert f"/opt/ml/model/{checkpoint}" in last and "weights" in last, last
