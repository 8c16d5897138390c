"""Hostile and careless inputs from the security review (issue 13), through the real CLI and process.py.

Weights: the loader may only unpickle bytes that the manifest check resolved and hashed; every attempt
to slip in another pickle must stop with exit 4 before it is unpickled (the pickles here would create a
marker file when unpickled). Scans: MetaImage data must come from the scan's own folder and inflate to
the announced size; work is bounded before it is allocated. Outputs: all or nothing, under signals and
concurrent runs too. Runs that GC would make as a non-root user drop to `nobody` when run as root.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import REPO, WEIGHTS, pdac, process, run

NOBODY = 65534


# --- helpers ---------------------------------------------------------------------------------------------

class _CreatesMarker:
    """Unpickling this opens (creates) the marker file: proof that code in a pickle ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def evil_checkpoint(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(_CreatesMarker(marker)))


def as_gc_user(cmd: list[str], env: dict | None = None, timeout: int = 600):
    """Run as a non-root user, as GC does: `nobody` via setpriv when we are root, else as ourselves."""
    if os.geteuid() == 0:
        cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *cmd]
    return run(cmd, env=env, timeout=timeout)


def process_as_gc_user(base: Path, scan: Path, env: dict) -> tuple[object, Path]:
    """process.py on `scan` as a non-root user; (result, output folder)."""
    out = world_writable(base / "out")
    r = as_gc_user([sys.executable, str(REPO / "process.py"), "--input", str(gc_input(base, scan)),
                    "--output", str(out)], env={"HOME": str(out), **env})
    return r, out


needs_setpriv = pytest.mark.skipif(os.geteuid() == 0 and not shutil.which("setpriv"),
                                   reason="as root, needs setpriv to drop to an unprivileged user")


@pytest.fixture
def open_tmp():
    """A temporary folder that an unprivileged user can reach (pytest's tmp_path is private to root)."""
    base = Path(tempfile.mkdtemp(prefix="pdac-sec-", dir="/tmp"))
    base.chmod(0o755)
    yield base
    for p in [base, *base.rglob("*")]:
        if p.is_dir() and not p.is_symlink():
            p.chmod(0o755)
    shutil.rmtree(base, ignore_errors=True)


def world_writable(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o777)
    return folder


def gc_input(base: Path, scan: Path) -> Path:
    folder = base / "input" / "images" / "venous-ct"
    folder.mkdir(parents=True)
    shutil.copy(scan, folder / "scan.mha")
    for p in [base / "input", *(base / "input").rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return base / "input"


def weights_copy(base: Path) -> Path:
    target = base / "weights"
    shutil.copytree(WEIGHTS, target)
    return target


def rehash(weights: Path) -> None:
    r = pdac("weights-manifest", str(weights))
    assert r.returncode == 0, r.stderr


def error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if " ERROR " in ln]


def assert_one_line_error(r, code: int, fragment: str) -> None:
    assert r.returncode == code, r.stderr[-3000:]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    errors = error_lines(r.stderr)
    assert len(errors) == 1 and fragment in errors[0], r.stderr[-3000:]


def no_outputs(out: Path) -> bool:
    return not out.exists() or not [p for p in out.rglob("*") if p.is_file()]


# --- 1. weights integrity: hash what you load, load what you hashed ----------------------------------------

def test_symlinked_fold_folder_is_refused_before_unpickling(tmp_path, open_tmp, phantom_scans):
    weights = weights_copy(open_tmp)
    outside = open_tmp / "elsewhere"
    marker = world_writable(open_tmp / "markers") / "pickle-ran"
    evil_checkpoint(outside / "checkpoint_final.pth", marker)
    (weights / "lesion" / "fold_1").symlink_to(outside, target_is_directory=True)
    r = process(gc_input(open_tmp, phantom_scans["identity"]), tmp_path / "out", env={"PDAC_WEIGHTS": str(weights)})
    assert not marker.exists(), "the unlisted pickle was unpickled"
    assert_one_line_error(r, 4, "symlink leaves the weights folder")
    assert no_outputs(tmp_path / "out")


@needs_setpriv
def test_unlistable_fold_folder_is_refused_before_unpickling(open_tmp, phantom_scans):
    """GC runs as a non-root user: a fold folder it may enter but not list hid its checkpoint from the
    manifest check while the loader still opened it by name."""
    weights = weights_copy(open_tmp)
    marker = world_writable(open_tmp / "markers") / "pickle-ran"
    hidden = weights / "lesion" / "fold_1"
    evil_checkpoint(hidden / "checkpoint_final.pth", marker)
    for p in [weights, *weights.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    hidden.chmod(0o311)  # enter, but not list
    r, out = process_as_gc_user(open_tmp, phantom_scans["identity"], {"PDAC_WEIGHTS": str(weights)})
    assert not marker.exists(), "the unlisted pickle was unpickled"
    assert_one_line_error(r, 4, f"cannot list weights folder {hidden}")
    assert no_outputs(out)


@pytest.mark.parametrize("where", ["absolute", "relative"])
def test_checkpoint_path_from_the_configuration_is_refused(tmp_path, phantom_scans, where):
    marker = tmp_path / "pickle-ran"
    evil = tmp_path / "evil" / "checkpoint.pth"
    evil_checkpoint(evil, marker)
    name = str(evil) if where == "absolute" else os.path.relpath(evil, WEIGHTS / "lesion" / "fold_0")
    out = tmp_path / "out"
    r = pdac("detect", str(phantom_scans["identity"]), "-o", str(out),
             "--set", f"stage2.checkpoints={json.dumps([name])}")
    assert not marker.exists(), "a checkpoint named by the configuration was unpickled"
    assert_one_line_error(r, 4, "checkpoint name must be a file name inside the fold folder")
    assert no_outputs(out)


@pytest.mark.parametrize("damage,message", [
    ("manifest", "not a valid manifest"),
    ("plans", "plans.json/dataset.json unusable"),
    ("dataset", "dataset.json: not valid JSON"),
    ("metadata", "unexpected contents (init_args"),
])
def test_malformed_weights_are_a_weights_error(tmp_path, phantom_scans, damage, message):
    weights = weights_copy(tmp_path)
    if damage == "manifest":
        (weights / "manifest.json").write_text('{"algorithm": "sha256", "files": ["lesion/plans.json"]}')
    elif damage == "plans":
        (weights / "lesion" / "plans.json").write_text('{"configurations": 1}')
        rehash(weights)
    elif damage == "dataset":
        (weights / "lesion" / "dataset.json").write_bytes(b"\xff\xfe{")
        rehash(weights)
    else:
        import torch

        ckpt = weights / "lesion" / "fold_0" / "checkpoint_best_panorama.pth"
        data = torch.load(ckpt, weights_only=False)
        data["init_args"] = "3d_fullres"
        torch.save(data, ckpt)
        rehash(weights)
    r = pdac("detect", str(phantom_scans["identity"]), "-o", str(tmp_path / "out"), "--weights", str(weights))
    assert_one_line_error(r, 4, message)
    assert no_outputs(tmp_path / "out")


@needs_setpriv
def test_unreadable_weights_file_is_a_weights_error(open_tmp, phantom_scans):
    weights = weights_copy(open_tmp)
    for p in [weights, *weights.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    plans = weights / "pancreas" / "plans.json"
    plans.chmod(0o000)
    r, out = process_as_gc_user(open_tmp, phantom_scans["identity"], {"PDAC_WEIGHTS": str(weights)})
    assert_one_line_error(r, 4, f"cannot read weights file {plans}")
    assert no_outputs(out)


# --- 2. an unusable GC model mount never falls back to the demo weights ---------------------------------

@needs_setpriv
def test_unreadable_gc_model_mount_stops_the_run(open_tmp, phantom_scans):
    mount = open_tmp / "opt-ml-model"
    shutil.copytree(WEIGHTS, mount)
    mount.chmod(0o000)
    r, out = process_as_gc_user(open_tmp, phantom_scans["identity"], {"PDAC_GC_MODEL_DIR": str(mount)})
    assert_one_line_error(r, 4, f"{mount}: GC model mount is present but unreadable")
    assert "refusing to fall back" in r.stderr
    assert no_outputs(out)


# --- 3-5, 7, 8 and empty case ids: one batch of hostile scans -----------------------------------------------

def _mha_header(dims, element="MET_SHORT", spacing=(1, 1, 1), data="LOCAL", extra=b"") -> bytes:
    return (b"ObjectType = Image\nNDims = %d\nDimSize = %s\nElementType = %s\nElementSpacing = %s\n"
            % (len(dims), " ".join(map(str, dims)).encode(), element.encode(), " ".join(map(str, spacing)).encode())
            + extra + b"ElementDataFile = " + data.encode() + b"\n")


def _compressed_payload_damaged(scan: Path, folder: Path) -> bytes:
    """The phantom as a compressed .mha whose zlib stream is damaged in the middle (SimpleITK reads it)."""
    tmp = folder / "tmp_compressed.mha"
    sitk.WriteImage(sitk.ReadImage(str(scan)), str(tmp), useCompression=True)
    data = tmp.read_bytes()
    tmp.unlink()
    start = data.index(b"ElementDataFile = LOCAL\n") + len(b"ElementDataFile = LOCAL\n")
    payload = bytearray(data[start:])
    for k in range(len(payload) // 2, len(payload) // 2 + 64):
        payload[k] ^= 0xFF
    return data[:start] + bytes(payload)


def make_hostile_scans(folder: Path, outside: Path, phantom: Path) -> dict[str, tuple[Path, str]]:
    """case -> (file, the refusal's message fragment)."""
    folder.mkdir(parents=True)
    outside.mkdir(parents=True)
    raw = np.full((40, 48, 48), 40, np.int16).tobytes()
    (outside / "outside.raw").write_bytes(raw)
    kinds: dict[str, tuple[Path, str]] = {}

    def add(case, content: bytes, message, suffix=".mha"):
        path = folder / f"{case}{suffix}"
        path.write_bytes(content)
        kinds[case] = (path, message)

    # 3. corrupt compressed pixel data that SimpleITK inflates partly without complaint
    add("corrupt_compressed", _compressed_payload_damaged(phantom, folder), "corrupt compressed pixel data")
    # 4. pixel data from anywhere but the scan's folder
    dims = (48, 48, 40)
    add("data_absolute", _mha_header(dims, data=str(outside / "outside.raw")), "points outside the scan's folder")
    add("data_parent", _mha_header(dims, data=f"../{outside.name}/outside.raw"), "points outside the scan's folder")
    (folder / "link.raw").symlink_to(outside / "outside.raw")
    add("data_symlink", _mha_header(dims, data="link.raw"), "is a link out of the scan's folder")
    os.mkfifo(folder / "fifo.raw")
    add("data_fifo", _mha_header(dims, data="fifo.raw"), "is not a regular file")
    add("data_list", _mha_header(dims, data="LIST"), "file lists and patterns are not supported")
    # 8. element types that are not numeric scalars
    add("string_pixels", _mha_header((8, 8, 4), element="MET_STRING") + b"\0" * 256,
        "unsupported element type MET_STRING")
    add("array_pixels", _mha_header((8, 8, 4), element="MET_FLOAT_ARRAY") + b"\0" * 1024,
        "unsupported element type MET_FLOAT_ARRAY")
    # 7. a file name that is not UTF-8, and 'empty case id'
    bad_name = os.fsdecode(os.fsencode(str(folder)) + b"/bad\xff_0000.mha")
    shutil.copy(phantom, bad_name)
    kinds["bad\\xff"] = (Path(bad_name), "file name is not valid UTF-8")
    shutil.copy(phantom, folder / "_0000.mha")
    kinds[""] = (folder / "_0000.mha", "empty case id")
    return kinds


@pytest.fixture(scope="module")
def hostile_batch(tmp_path_factory, phantom_scans):
    base = tmp_path_factory.mktemp("hostile")
    folder = base / "scans"
    kinds = make_hostile_scans(folder, base / "outside", phantom_scans["identity"])
    shutil.copy(phantom_scans["identity"], folder / "good_0000.mha")
    # a legitimate detached header: data in a regular file beside it
    body = sitk.GetImageFromArray(np.where(np.random.default_rng(0).random((24, 64, 64)) > 0.5, 40, -1000)
                                  .astype(np.int16))
    body.SetSpacing((3.0, 3.0, 4.0))
    sitk.WriteImage(body, str(folder / "detached.mhd"))
    out = base / "out"
    empty_mount = base / "empty-model-mount"  # GC without an uploaded model: the demo weights, said so
    empty_mount.mkdir()
    started = time.monotonic()
    r = pdac("detect", str(folder), "-o", str(out), env={"PDAC_GC_MODEL_DIR": str(empty_mount)}, timeout=300)
    return r, out, kinds, time.monotonic() - started


@pytest.mark.parametrize("case", ["corrupt_compressed", "data_absolute", "data_parent", "data_symlink",
                                  "data_fifo", "data_list", "string_pixels", "array_pixels"])
def test_hostile_metaimage_is_refused_cleanly(hostile_batch, case):
    r, out, kinds, _ = hostile_batch
    _, message = kinds[case]
    assert r.returncode == 1, r.stderr[-3000:]
    assert "Traceback" not in r.stderr, r.stderr[-5000:]
    lines = [ln for ln in error_lines(r.stderr) if f"pdac.infer.batch: {case}:" in ln]
    assert len(lines) == 1 and message in lines[0], r.stderr[-3000:]
    assert not (out / f"{case}_detection_map.mha").exists()
    assert case not in json.loads((out / "pdac-likelihood.json").read_text())


@pytest.mark.parametrize("case", ["bad\\xff", ""])
def test_unusable_file_names_are_skipped_without_losing_the_batch(hostile_batch, case):
    r, out, kinds, _ = hostile_batch
    path, message = kinds[case]
    assert r.returncode == 1, r.stderr[-3000:]
    lines = [ln for ln in error_lines(r.stderr) if message in ln]
    assert len(lines) == 1, r.stderr[-3000:]
    likelihoods = json.loads((out / "pdac-likelihood.json").read_text())
    assert set(likelihoods) == {"good", "detached"}  # the batch went on
    assert not (out / "_detection_map.mha").exists()


def test_legitimate_detached_header_still_works(hostile_batch):
    r, out, _, _ = hostile_batch
    assert (out / "detached_detection_map.mha").is_file(), r.stderr[-3000:]
    assert (out / "good_detection_map.mha").is_file()


def test_the_weights_used_and_why_are_logged(hostile_batch):
    r, *_ = hostile_batch
    lines = [ln for ln in r.stderr.splitlines() if "INFO pdac.infer.pipeline: using weights" in ln]
    assert len(lines) == 1, r.stderr[-3000:]
    assert f"using weights {WEIGHTS} (bundled demo weights: " in lines[0] and "empty-model-mount is empty" in lines[0]


def _log_seconds(stderr: str, pattern: str) -> list[int]:
    stamps = re.findall(r"^(\d\d):(\d\d):(\d\d) " + pattern, stderr, re.M)
    return [int(h) * 3600 + int(m) * 60 + int(s) for h, m, s in stamps]


def test_bounded_work_refuses_huge_volumes_quickly(tmp_path):
    """Small files that describe enormous volumes are refused before resampling allocates anything."""
    folder = tmp_path / "scans"
    folder.mkdir()
    cases = {
        # 2 MB on disk at 40 mm spacing: 4 m per axis
        "coarse_extent": (np.zeros((100, 100, 100), np.int16), (40.0, 40.0, 40.0), "limits.max_extent_mm"),
        # within the extent limit, but 41 million voxels at the stage-1 spacing
        "coarse_stage1": (np.zeros((49, 49, 49), np.int16), (40.0, 40.0, 40.0), "limits.max_stage1_voxels"),
        "needle": (np.zeros((400_000, 2, 2), np.int16), (1.0, 1.0, 1.0), "limits.max_extent_mm"),
    }
    for case, (arr, spacing, _) in cases.items():
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing(spacing)
        sitk.WriteImage(img, str(folder / f"{case}.mha"), useCompression=True)
        assert (folder / f"{case}.mha").stat().st_size < 3_000_000
    started = time.monotonic()
    r = pdac("detect", str(folder), "-o", str(tmp_path / "out"), timeout=180)
    seconds = time.monotonic() - started
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    for case, (_, _, limit) in cases.items():
        lines = [ln for ln in error_lines(r.stderr) if f"pdac.infer.batch: {case}:" in ln]
        assert len(lines) == 1 and limit in lines[0] and "exceeds the limit" in lines[0], r.stderr[-3000:]
    # from the models being ready to the last refusal (the clock of the log lines; not across midnight)
    ready = _log_seconds(r.stderr, r"INFO pdac.infer.models: loaded lesion")
    refused = _log_seconds(r.stderr, r"ERROR pdac.infer.batch: ")
    assert ready and refused and refused[-1] - ready[0] < 30, (seconds, r.stderr[-3000:])


def test_stage2_crop_is_bounded_before_cropping(tmp_path, phantom_scans):
    r = pdac("detect", str(phantom_scans["identity"]), "-o", str(tmp_path / "out"),
             "--set", "limits.max_stage2_voxels=1000")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    lines = error_lines(r.stderr)
    assert len(lines) == 1 and "after cropping and resampling for stage 2 exceeds the limit of 1,000" in lines[0]
    assert no_outputs(tmp_path / "out")


# --- 8. unreadable input folders -----------------------------------------------------------------------------

@needs_setpriv
def test_unreadable_input_folder_is_an_input_error(open_tmp, phantom_scans):
    root = gc_input(open_tmp, phantom_scans["identity"])
    scans = root / "images" / "venous-ct"
    scans.chmod(0o311)
    out = world_writable(open_tmp / "out")
    r = as_gc_user([sys.executable, str(REPO / "process.py"), "--input", str(root), "--output", str(out)],
                   env={"HOME": str(out)})
    assert_one_line_error(r, 3, f"{scans}: cannot list the input folder")
    r = as_gc_user([sys.executable, "-m", "pdac", "detect", str(scans), "-o", str(out)], env={"HOME": str(out)})
    assert_one_line_error(r, 3, f"{scans}: cannot list the input folder")
    assert no_outputs(out)


# --- 6. signals -----------------------------------------------------------------------------------------------

def _run_until(cmd: list[str], pattern: str, sig: int, timeout: float = 300):
    """Start `cmd`, send `sig` once a stderr line matches `pattern`; (return code, stderr)."""
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=REPO)
    lines = []
    deadline = time.monotonic() + timeout
    try:
        for line in proc.stderr:
            lines.append(line)
            if re.search(pattern, line):
                proc.send_signal(sig)
                break
            assert time.monotonic() < deadline, "".join(lines[-20:])
        lines.extend(proc.stderr)
        return proc.wait(timeout=120), "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_sigterm_mid_run_leaves_no_partial_gc_output(tmp_path, phantom_scans):
    root = gc_input(tmp_path, phantom_scans["identity"])
    out = tmp_path / "out"
    code, stderr = _run_until([sys.executable, str(REPO / "process.py"), "--input", str(root), "--output", str(out)],
                              r"stage 1 done", signal.SIGTERM)
    assert code == 128 + signal.SIGTERM, stderr[-3000:]
    assert "Traceback" not in stderr
    errors = error_lines(stderr)
    assert len(errors) == 1 and "interrupted by SIGTERM" in errors[0], stderr[-3000:]
    assert no_outputs(out), list(out.rglob("*"))  # no .part file, no map without its likelihood


def test_sigint_keeps_finished_cases_and_removes_the_rest(tmp_path, phantom_scans):
    out = tmp_path / "out"
    scans = sorted(phantom_scans.values())
    code, stderr = _run_until([sys.executable, "-m", "pdac", "detect", *map(str, scans), "-o", str(out), "--overlays"],
                              r"INFO pdac.infer.batch: .*: likelihood", signal.SIGINT)
    assert code == 128 + signal.SIGINT, stderr[-3000:]
    assert "Traceback" not in stderr and "interrupted by SIGINT" in stderr
    finished = json.loads((out / "pdac-likelihood.json").read_text())
    assert len(finished) == 1
    expected = {f"{case}{suffix}" for case in finished
                for suffix in ("_detection_map.mha", "_lesions.json", "_overlay.png")} | {"pdac-likelihood.json"}
    assert {p.name for p in out.iterdir()} == expected  # nothing of the interrupted case, no temporaries


@pytest.fixture(scope="module")
def small_scans(tmp_path_factory) -> list[Path]:
    """Two small soft-tissue volumes: the whole pipeline runs on them in about a second."""
    folder = tmp_path_factory.mktemp("small")
    paths = []
    for seed in (1, 2):
        arr = np.where(np.random.default_rng(seed).random((24, 64, 64)) > 0.3, 40, -1000).astype(np.int16)
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing((3.0, 3.0, 4.0))
        paths.append(folder / f"small{seed}_0000.mha")
        sitk.WriteImage(img, str(paths[-1]))
    return paths


# --- 9. a case's outputs are a set --------------------------------------------------------------------------

def test_failed_overlay_removes_the_cases_other_outputs(tmp_path, small_scans):
    out = tmp_path / "out"
    case = small_scans[0].name.removesuffix("_0000.mha")
    (out / f"{case}_overlay.png").mkdir(parents=True)  # the overlay cannot be put in place
    r = pdac("detect", str(small_scans[0]), "-o", str(out), "--overlays")
    assert_one_line_error(r, 1, f"{case}: cannot write {out / f'{case}_overlay.png'}")
    assert sorted(p.name for p in out.iterdir()) == [f"{case}_overlay.png"]  # no map, no lesion list, no .part


# --- 10. concurrent runs into one output folder ---------------------------------------------------------------

def test_concurrent_runs_into_one_folder_keep_every_likelihood(tmp_path, small_scans):
    out = tmp_path / "out"
    procs = [subprocess.Popen([sys.executable, "-m", "pdac", "detect", str(scan), "-o", str(out), "--threads", "1"],
                              cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for scan in small_scans]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    for code, stderr in results:
        assert code == 0, stderr[-3000:]
    likelihoods = json.loads((out / "pdac-likelihood.json").read_text())
    assert set(likelihoods) == {scan.name.removesuffix("_0000.mha") for scan in small_scans}
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no lock file, no temporaries


# --- evaluate: values outside what PANORAMA defines -----------------------------------------------------------

def _eval_pair(tmp_path: Path, label: np.ndarray, detection: np.ndarray):
    dets, labels = tmp_path / "dets", tmp_path / "labels"
    dets.mkdir()
    labels.mkdir()
    for arr, path in ((label, labels / "c1.mha"), (detection, dets / "c1_detection_map.mha")):
        sitk.WriteImage(sitk.GetImageFromArray(arr), str(path))
    return pdac("evaluate", "--detections", str(dets), "--labels", str(labels), "-o", str(tmp_path / "report"),
                "--bootstrap", "0")


@pytest.mark.parametrize("value", [7, 2**32 + 1])
def test_evaluate_refuses_labels_outside_panorama_values(tmp_path, value):
    label = np.zeros((8, 16, 16), np.uint64)
    label[2:5, 4:8, 4:8] = value
    det = np.zeros((8, 16, 16), np.float32)
    det[2:5, 4:8, 4:8] = 0.9
    r = _eval_pair(tmp_path, label, det)
    assert_one_line_error(r, 3, "label values must be PANORAMA's integers 0..6")


def test_evaluate_refuses_maps_outside_zero_one(tmp_path):
    label = np.zeros((8, 16, 16), np.uint8)
    label[2:5, 4:8, 4:8] = 1
    det = np.zeros((8, 16, 16), np.float32)
    det[2:5, 4:8, 4:8] = 3.0
    r = _eval_pair(tmp_path, label, det)
    assert_one_line_error(r, 3, "detection map values must lie in [0, 1]")
