"""The volumes of a case viewer page: a box of the scan on a (possibly coarser) viewer grid, every overlay on
that same grid, each as gzip-compressed NIfTI bytes that NiiVue reads.

- The CT is stored as uint8 in `CT_STEP_HU` steps from `CT_MIN_HU` (NIfTI scl_slope / scl_inter, so the viewer
  shows Hounsfield units): -400 ... 620 HU in 4 HU steps, below CT noise and finer than a 400 HU window's grey
  levels need; values outside are clipped (stated on the page).
- A grid too large for the page's size budget is made coarser by whole factors, the finest axis first
  (`shrink_factors`): the CT by averaging (SimpleITK's BinShrink), detection maps by the block maximum and label
  maps by the most important label in the block (a small lesion never vanishes).
- Geometry (origin, spacing, direction, flips, oblique) goes through SimpleITK's NIfTI writer, so the viewer
  places every voxel where the scan has it (LPS in ITK, RAS in NIfTI)."""

from __future__ import annotations

import dataclasses
import gzip
import struct
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

CT_MIN_HU = -400.0
CT_STEP_HU = 4.0
CT_MAX_HU = CT_MIN_HU + 255 * CT_STEP_HU  # 620 HU

NIFTI_INTENT_LABEL = 1002  # NiiVue outlines label volumes (intent "label") when atlasOutline > 0
_INTENT_CODE_AT, _SCL_SLOPE_AT, _SCL_INTER_AT = 68, 112, 116  # byte offsets in the NIfTI-1 header


@dataclasses.dataclass(frozen=True)
class Box:
    """An index box of the scan: start and size as (x, y, z), inside the scan."""

    start: tuple[int, int, int]
    size: tuple[int, int, int]

    @classmethod
    def whole(cls, image: sitk.Image) -> Box:
        return cls((0, 0, 0), tuple(int(s) for s in image.GetSize()))

    def clipped(self, image: sitk.Image) -> Box:
        """The part of the box inside `image` (the whole image when nothing is left)."""
        lo = [max(0, int(s)) for s in self.start]
        hi = [min(int(n), int(s) + int(k)) for n, s, k in zip(image.GetSize(), self.start, self.size, strict=True)]
        if any(h <= low for low, h in zip(lo, hi, strict=True)):
            return Box.whole(image)
        return Box(tuple(lo), tuple(h - low for low, h in zip(lo, hi, strict=True)))

    @property
    def slices_zyx(self) -> tuple[slice, slice, slice]:
        return tuple(slice(s, s + n) for s, n in zip(self.start[::-1], self.size[::-1], strict=True))

    @property
    def voxels(self) -> int:
        return int(np.prod(self.size, dtype=np.int64))


def shrink_factors(spacing_xyz: Sequence[float], size_xyz: Sequence[int], max_voxels: int) -> tuple[int, int, int]:
    """Whole shrink factors (x, y, z) that bring the grid to at most `max_voxels`, coarsening the axis whose
    current voxel size is finest first (x and y together when their spacings agree, so pixels stay square);
    (1, 1, 1) when it already fits."""
    factors = [1, 1, 1]
    square = abs(spacing_xyz[0] - spacing_xyz[1]) <= 0.05 * max(spacing_xyz[0], spacing_xyz[1])
    groups = [(0, 1), (2,)] if square else [(0,), (1,), (2,)]

    def voxels() -> int:
        return int(np.prod([max(1, n // f) for n, f in zip(size_xyz, factors, strict=True)], dtype=np.int64))

    while voxels() > max_voxels:
        open_groups = [g for g in groups if all(size_xyz[i] // (factors[i] + 1) >= 1 for i in g)]
        if not open_groups:
            break
        group = min(open_groups, key=lambda g: min(spacing_xyz[i] * factors[i] for i in g))
        for i in group:
            factors[i] += 1
    return tuple(factors)


def _same_grid(a: sitk.Image, b: sitk.Image, tol: float = 1e-3) -> bool:
    return (a.GetSize() == b.GetSize()
            and np.allclose(a.GetSpacing(), b.GetSpacing(), rtol=1e-5, atol=0)
            and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=tol)
            and np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-5))


def ct_grid(scan: sitk.Image, box: Box, factors: Sequence[int]) -> sitk.Image:
    """The box of the scan, averaged over blocks of `factors` (x, y, z) voxels: float32 on the viewer grid."""
    roi = sitk.RegionOfInterest(scan, list(box.size), list(box.start))
    if any(f > 1 for f in factors):  # averaged in the scan's own type (integer HU stay integer: rounded)
        roi = sitk.BinShrink(roi, [int(f) for f in factors])
    return sitk.Cast(roi, sitk.sitkFloat32)


def _blocks(array_zyx: np.ndarray, factors_xyz: Sequence[int]) -> np.ndarray:
    """(nz, fz, ny, fy, nx, fx) view of the array, cut to whole blocks."""
    fz, fy, fx = (int(f) for f in factors_xyz[::-1])
    nz, ny, nx = (n // f for n, f in zip(array_zyx.shape, (fz, fy, fx), strict=True))
    return array_zyx[:nz * fz, :ny * fy, :nx * fx].reshape(nz, fz, ny, fy, nx, fx)


def block_max(array_zyx: np.ndarray, factors_xyz: Sequence[int]) -> np.ndarray:
    if all(f == 1 for f in factors_xyz):
        return array_zyx
    return _blocks(array_zyx, factors_xyz).max(axis=(1, 3, 5))


def block_label(array_zyx: np.ndarray, factors_xyz: Sequence[int], priority: Sequence[int]) -> np.ndarray:
    """Each block takes the first label of `priority` that it holds (0 when none)."""
    if all(f == 1 for f in factors_xyz):
        return array_zyx
    blocks = _blocks(array_zyx, factors_xyz)
    out = np.zeros(blocks.shape[::2], dtype=array_zyx.dtype)
    for value in reversed(list(priority)):
        out[(blocks == value).any(axis=(1, 3, 5))] = value
    return out


def overlay_on_grid(overlay: sitk.Image, scan: sitk.Image, box: Box, factors: Sequence[int], grid: sitk.Image,
                    kind: str, priority: Sequence[int] = ()) -> np.ndarray:
    """An overlay as a (z, y, x) array on the viewer grid. On the scan's own grid it is cut and reduced by
    blocks (maximum for "map", `priority` for "label"); on any other grid it is resampled (nearest voxel)."""
    if _same_grid(overlay, scan):
        array = sitk.GetArrayViewFromImage(overlay)[box.slices_zyx]
        reduced = block_max(array, factors) if kind == "map" else block_label(array, factors, priority)
        expected = sitk.GetArrayViewFromImage(grid).shape
        assert reduced.shape == expected, (reduced.shape, expected)  # BinShrink's rounding is ours
        return np.ascontiguousarray(reduced)
    resampled = sitk.Resample(overlay, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0.0, overlay.GetPixelID())
    return sitk.GetArrayFromImage(resampled)


def quantised_ct(ct_zyx: np.ndarray) -> np.ndarray:
    """HU -> uint8 steps (HU = CT_MIN_HU + CT_STEP_HU * value)."""
    steps = np.rint((np.asarray(ct_zyx, dtype=np.float32) - CT_MIN_HU) / CT_STEP_HU)
    return np.clip(steps, 0, 255).astype(np.uint8)


def nifti_gz(array_zyx: np.ndarray, grid: sitk.Image, slope: float = 1.0, inter: float = 0.0,
             label: bool = False) -> bytes:
    """The array on `grid`'s geometry as .nii.gz bytes (scl_slope / scl_inter and the label intent set in the
    header; gzip without a time stamp, so the same input gives the same bytes)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array_zyx))
    image.CopyInformation(grid)
    with tempfile.TemporaryDirectory(prefix="pdac-viewer-") as tmp:
        path = Path(tmp) / "volume.nii"
        sitk.WriteImage(image, str(path), useCompression=False)
        data = bytearray(path.read_bytes())
    if struct.unpack_from("<i", data, 0)[0] != 348:
        raise ValueError("SimpleITK wrote an unexpected NIfTI header (not NIfTI-1 little-endian)")
    struct.pack_into("<ff", data, _SCL_SLOPE_AT, float(slope), float(inter))
    if label:
        struct.pack_into("<h", data, _INTENT_CODE_AT, NIFTI_INTENT_LABEL)
    return gzip.compress(bytes(data), compresslevel=6, mtime=0)
