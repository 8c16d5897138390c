"""The package as users install it: `pip wheel .`, installed into a fresh environment outside the repo.

The fresh environment borrows the dependencies of the test interpreter's site-packages through a .pth
line (no 5 GB reinstall), but not this checkout: `pdac` must come from the wheel alone."""

from __future__ import annotations

import site
import subprocess
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from conftest import REPO, WEIGHTS, run, write_phantom


def test_wheel_installed_outside_the_repo_runs_detect_from_any_folder(tmp_path):
    wheels = tmp_path / "wheels"
    r = run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q",
             "-w", str(wheels)], timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    wheel = next(wheels.glob("pdac-*.whl"))

    env_dir = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    purelib = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    (purelib / "borrowed-deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    r = run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
            timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = run([str(python), "-c", "import pdac; print(pdac.__file__)"], cwd=elsewhere)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(purelib), where.stdout  # the wheel, not this checkout

    pdac_script = env_dir / "bin" / "pdac"
    assert run([str(pdac_script), "--help"], cwd=elsewhere).returncode == 0
    scan, _ = write_phantom(elsewhere / "scans" / "case_0000.mha", seed=31)
    r = run([str(pdac_script), "detect", "scans", "-o", "out", "--weights", str(WEIGHTS)], cwd=elsewhere)
    assert r.returncode == 0, r.stderr[-3000:]
    det = sitk.ReadImage(str(elsewhere / "out" / "case_detection_map.mha"))
    assert det.GetSize() == scan.GetSize()
    assert 0.0 <= np.max(sitk.GetArrayViewFromImage(det)) <= 1.0
    assert "Please cite" not in r.stdout + r.stderr  # third-party banners stay quiet
    # The bench's real plans ship with the package (no tests/ folder out here).
    bench_data = run([str(python), "-c", "from pdac.lab.bench import REAL_PLANS; "
                      "print(len(list(REAL_PLANS.glob('*/*/plans.json'))))"], cwd=elsewhere)
    assert bench_data.stdout.strip() == "2", bench_data.stderr
