"""Shared fixtures: synthetic phantoms (generated once per session) and CLI runners."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

REPO = Path(__file__).resolve().parent.parent
WEIGHTS = REPO / "weights"
TEST_INPUT = REPO / "test" / "input"
TEST_OUTPUT = REPO / "test" / "output"


def run(args: list[str], env: dict | None = None, timeout: int = 600, cwd: Path | None = None):
    """Run a command with the test interpreter; returns CompletedProcess (text)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(args, capture_output=True, text=True, env=full_env, timeout=timeout, cwd=cwd or REPO)


def pdac(*args: str, env: dict | None = None, timeout: int = 600):
    return run([sys.executable, "-m", "pdac", *args], env=env, timeout=timeout)


def process(input_dir: Path, output_dir: Path, env: dict | None = None, timeout: int = 600):
    return run([sys.executable, str(REPO / "process.py"), "--input", str(input_dir), "--output", str(output_dir)],
               env=env, timeout=timeout)


def write_phantom(path: Path, seed: int, orientation: str = "identity", lesion: bool = True):
    from pdac.lab.phantom import PhantomSpec, make_phantom

    spec = PhantomSpec(orientation=orientation, lesion=lesion)
    image, label, _ = make_phantom(np.random.SeedSequence([seed, 0]), spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return image, label


@pytest.fixture(scope="session")
def phantom_scans(tmp_path_factory) -> dict[str, Path]:
    """Three small phantom scans (.mha): identity, flipped and oblique direction matrices."""
    root = tmp_path_factory.mktemp("scans")
    out = {}
    for seed, orientation in ((11, "identity"), (12, "flipped"), (13, "oblique")):
        out[orientation] = root / f"case_{orientation}_0000.mha"
        write_phantom(out[orientation], seed, orientation)
    return out


def assert_valid_detection_map(det: sitk.Image, scan: sitk.Image) -> np.ndarray:
    """GC validity: same grid as the scan, float32, values in [0, 1], every connected lesion constant."""
    from scipy import ndimage

    assert det.GetSize() == scan.GetSize()
    np.testing.assert_allclose(det.GetSpacing(), scan.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(det.GetOrigin(), scan.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(det.GetDirection(), scan.GetDirection(), atol=1e-6)
    assert det.GetPixelID() == sitk.sitkFloat32
    arr = sitk.GetArrayFromImage(det)
    assert np.all(np.isfinite(arr)) and arr.min() >= 0 and arr.max() <= 1
    labels, n = ndimage.label(arr > 0, structure=np.ones((3, 3, 3)))
    for i in range(1, n + 1):
        values = np.unique(arr[labels == i])
        assert len(values) == 1, f"lesion {i} is not constant: {values[:5]}"
    return arr


def weights_with_a_forged_hash(folder: Path) -> tuple[Path, str]:
    """A copy of the bundled weights at `folder` whose manifest lists a wrong SHA-256 for one checkpoint (a
    broken model tarball or mount; refused before anything is unpickled), and that checkpoint's name."""
    import shutil

    shutil.copytree(WEIGHTS, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    checkpoint = sorted(name for name in manifest["files"] if name.endswith(".pth"))[0]
    manifest["files"][checkpoint] = "0" * 64
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder, checkpoint
