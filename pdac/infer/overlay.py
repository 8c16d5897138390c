"""PNG views for people: phantom previews (labels outlined) and detection overlays."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402

from pdac.labels import DISPLAY_COLOURS  # noqa: E402

LABEL_COLOURS = DISPLAY_COLOURS


def _radiological(image: sitk.Image) -> sitk.Image:
    """Reorient (permute/flip only) so that array axes are (S->I... ) in LPS order for display."""
    try:
        return sitk.DICOMOrient(image, "LPS")
    except RuntimeError:
        return image


def _focus(volume_zyx: np.ndarray) -> tuple[int, int, int]:
    if np.any(volume_zyx):
        return tuple(int(v) for v in np.unravel_index(np.argmax(volume_zyx), volume_zyx.shape))
    return tuple(s // 2 for s in volume_zyx.shape)


def _panels(ct: np.ndarray, focus: tuple[int, int, int], spacing_xyz):
    """(axial, coronal) slices through `focus` plus their display aspect ratios."""
    z, y, _ = focus
    sx, sy, sz = spacing_xyz
    return [(ct[z], sy / sx, "axial"), (ct[:, y, :][::-1], sz / sx, "coronal")], (z, y)


def save_label_preview(image: sitk.Image, label: sitk.Image, path: Path, title: str = "") -> None:
    """Axial and coronal slices through the lesion (or the pancreas) with every label outlined."""
    image, label = _radiological(image), _radiological(label)
    ct, lab = sitk.GetArrayFromImage(image).astype(np.float32), sitk.GetArrayFromImage(label)
    target = (lab == 1) if np.any(lab == 1) else (lab == 4)
    focus = _focus(target.astype(np.float32))
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.5))
    views, (z, y) = _panels(ct, focus, image.GetSpacing())
    lab_views = [lab[z], lab[:, y, :][::-1]]
    for ax, (sl, aspect, name), lv in zip(axes, views, lab_views, strict=True):
        ax.imshow(sl, cmap="gray", vmin=-160, vmax=240, aspect=aspect, interpolation="nearest")
        for value, colour in LABEL_COLOURS.items():
            if np.any(lv == value):
                ax.contour(lv == value, levels=[0.5], colors=colour, linewidths=0.8)
        ax.set_title(name)
        ax.axis("off")
    handles = [plt.Line2D([], [], color=c, label=v.display_name) for v, c in LABEL_COLOURS.items()]
    fig.legend(handles=handles, loc="lower center", ncol=6, frameon=False)
    fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


BANNER_COLOUR = "#ff00ff"  # a colour neither the CT (grey) nor the overlay (autumn) produces


def _detection_overlay_figure(image: sitk.Image, detection_map: sitk.Image, title: str, banner: str | None = None):
    """Axial and coronal views through the most suspicious lesion, detection map over the CT, colour scale.
    `banner`: a warning printed in a box across the top (e.g. synthetic demo weights)."""
    image, detection_map = _radiological(image), _radiological(detection_map)
    ct = sitk.GetArrayFromImage(image).astype(np.float32)
    det = sitk.GetArrayFromImage(detection_map).astype(np.float32)
    focus = _focus(det)
    views, (z, y) = _panels(ct, focus, image.GetSpacing())
    det_views = [det[z], det[:, y, :][::-1]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.5))
    for ax, (sl, aspect, name), dv in zip(axes, views, det_views, strict=True):
        ax.imshow(sl, cmap="gray", vmin=-160, vmax=240, aspect=aspect, interpolation="nearest")
        shown = np.ma.masked_where(dv <= 0, dv)
        im = ax.imshow(shown, cmap="autumn", vmin=0, vmax=1, alpha=0.55, aspect=aspect, interpolation="nearest")
        if np.any(dv > 0):
            ax.contour(dv > 0, levels=[0.5], colors="red", linewidths=0.8)
        ax.set_title(name)
        ax.axis("off")
    fig.colorbar(im, ax=axes, fraction=0.025, label="lesion likelihood")
    fig.suptitle(title)
    if banner:
        fig.text(0.5, 1.0, banner, ha="center", va="bottom", fontsize=13, fontweight="bold", color="white",
                 bbox={"facecolor": BANNER_COLOUR, "edgecolor": "none", "pad": 6})
    return fig


def save_detection_overlay(image: sitk.Image, detection_map: sitk.Image, path: Path, title: str = "",
                           banner: str | None = None) -> None:
    """Axial and coronal views through the most suspicious lesion, detection map over the CT."""
    fig = _detection_overlay_figure(image, detection_map, title, banner)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


def detection_overlay_png(image: sitk.Image, detection_map: sitk.Image, title: str = "", dpi: int = 72,
                          banner: str | None = None) -> bytes:
    """The detection overlay as PNG bytes (for reports that embed their images)."""
    fig = _detection_overlay_figure(image, detection_map, title, banner)
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return buffer.getvalue()
