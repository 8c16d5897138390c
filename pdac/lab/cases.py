"""What both synthetic generators share: scanner orientations and the writer of one case in nnU-Net/PANORAMA
layout (`imagesTr/<case>_0000.nii.gz`, `labelsTr/<case>.nii.gz`, an optional preview PNG)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def draw_direction(rng: np.random.Generator, orientation: str) -> np.ndarray:
    """A scan's direction matrix: identity, flipped axes, or oblique (8-25 degrees); `random` picks one."""
    if orientation == "random":
        orientation = str(rng.choice(["identity", "identity", "flipped", "oblique"]))
    if orientation == "identity":
        return np.eye(3)
    signs = rng.choice([-1.0, 1.0], size=3)
    if orientation == "flipped":
        if signs.min() > 0:
            signs[int(rng.integers(3))] = -1.0
        return np.diag(signs)
    if orientation == "oblique":
        return _rotation(rng.normal(size=3), np.deg2rad(rng.uniform(8, 25))) @ np.diag(signs)
    raise ValueError(f"unknown orientation {orientation!r}")


def make_layout(out: Path) -> Path:
    out = Path(out)
    for sub in ("imagesTr", "labelsTr"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    return out


def write_case(out: Path, case: str, image: sitk.Image, label: sitk.Image, preview_title: str | None = None) -> None:
    """One case's image and label (compressed NIfTI) and, when titled, a label preview PNG."""
    sitk.WriteImage(image, str(out / "imagesTr" / f"{case}_0000.nii.gz"), useCompression=True)
    sitk.WriteImage(label, str(out / "labelsTr" / f"{case}.nii.gz"), useCompression=True)
    if preview_title is not None:
        from pdac.infer.overlay import save_label_preview

        save_label_preview(image, label, out / "previews" / f"{case}.png", preview_title)
