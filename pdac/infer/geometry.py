"""Geometry in physical space: resampling, bounding boxes and crops that hold for any direction matrix.

Conventions: SimpleITK index and physical vectors are (x, y, z); numpy arrays from SimpleITK are
(z, y, x). A `Region` is a SimpleITK index box (start, size), always inside its image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

# A scanner's patient coordinates lie within a few metres of its isocentre; beyond a kilometre the origin is
# corrupt, and near float64's range the world <-> index arithmetic loses every millimetre (an origin of 1e308
# turned a 0.999 scan into likelihood 0.0).
MAX_ABS_ORIGIN_MM = 1_000_000.0
DIRECTION_TOLERANCE = 0.01  # |D^T D - I|: a direction matrix is a rotation (or reflection), not a shear


def geometry_problem(origin, spacing, direction) -> str | None:
    """Why an image's physical geometry is unusable (None when it is usable): non-finite numbers, an
    absurd origin, a non-positive spacing, or a direction matrix that is not orthonormal."""
    origin, spacing = np.asarray(origin, dtype=np.float64), np.asarray(spacing, dtype=np.float64)
    direction = np.asarray(direction, dtype=np.float64)
    values = {"origin": origin, "spacing": spacing, "direction": direction}
    for what, v in values.items():
        if not np.all(np.isfinite(v)):
            return f"non-finite {what} {_short(v)}"
    if np.abs(origin).max(initial=0.0) > MAX_ABS_ORIGIN_MM:
        return f"absurd origin {_short(origin)} mm (beyond {MAX_ABS_ORIGIN_MM:g} mm)"
    if spacing.min(initial=1.0) <= 0:
        return f"invalid voxel spacing {_short(spacing)}"
    n = int(round(np.sqrt(direction.size)))
    if n * n != direction.size or np.abs(direction.reshape(n, n).T @ direction.reshape(n, n) - np.eye(n)).max() \
            > DIRECTION_TOLERANCE:
        return f"direction matrix {_short(direction)} is not orthonormal"
    return None


def _short(v: np.ndarray) -> str:
    return "(" + ", ".join(f"{x:.6g}" for x in np.ravel(v)) + ")"


def check_geometry(image: sitk.Image, name: str, error: type[Exception]) -> None:
    """Refuse (`error`, one line) an image whose origin, spacing or direction is unusable."""
    problem = geometry_problem(image.GetOrigin(), image.GetSpacing(), image.GetDirection())
    if problem:
        raise error(f"{name}: {problem}")


@dataclass(frozen=True)
class Region:
    start: tuple[int, int, int]  # x, y, z
    size: tuple[int, int, int]

    @property
    def numpy_slices(self) -> tuple[slice, slice, slice]:
        """The region as slices of a (z, y, x) numpy array."""
        return tuple(slice(s, s + n) for s, n in zip(self.start[::-1], self.size[::-1], strict=True))


def index_to_world_matrix(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """(A, origin) such that world = origin + A @ index, with A = direction * spacing."""
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    return direction * np.asarray(image.GetSpacing(), dtype=np.float64), np.asarray(image.GetOrigin())


def voxel_half_extent(image: sitk.Image) -> np.ndarray:
    """Half the world-axis-aligned extent of one voxel (exact for axis-aligned grids, conservative otherwise)."""
    a, _ = index_to_world_matrix(image)
    return 0.5 * np.abs(a).sum(axis=1)


def resampled_size(image: sitk.Image, spacing: tuple[float, float, float]) -> tuple[int, int, int]:
    extent = np.asarray(image.GetSize()) * np.asarray(image.GetSpacing())
    return tuple(int(max(1, round(e / s))) for e, s in zip(extent, spacing, strict=True))


def resample_to_spacing(
    image: sitk.Image,
    spacing: tuple[float, float, float],
    interpolator: int = sitk.sitkLinear,
    default_value: float = 0.0,
) -> sitk.Image:
    """Resample onto a grid with the same origin and direction and the given spacing (x, y, z)."""
    return sitk.Resample(
        image,
        resampled_size(image, spacing),
        sitk.Transform(),
        interpolator,
        image.GetOrigin(),
        tuple(float(s) for s in spacing),
        image.GetDirection(),
        default_value,
        image.GetPixelID(),
    )


def resample_like(image: sitk.Image, reference: sitk.Image, interpolator: int = sitk.sitkNearestNeighbor,
                  default_value: float = 0.0) -> sitk.Image:
    """Resample `image` onto the grid of `reference` (physical space, any directions)."""
    return sitk.Resample(image, reference, sitk.Transform(), interpolator, default_value, image.GetPixelID())


def world_bbox_of_mask(mask: np.ndarray, image: sitk.Image) -> tuple[np.ndarray, np.ndarray] | None:
    """World-axis-aligned box (min, max) in mm covering every voxel of `mask` (a (z, y, x) array on
    `image`'s grid), including the voxels' own extent. None when the mask is empty."""
    idx_zyx = np.argwhere(mask)
    if idx_zyx.size == 0:
        return None
    a, origin = index_to_world_matrix(image)
    # Only the voxels on the index-space hull can be extreme in world space; for a box-shaped
    # transform the per-axis min/max voxels suffice, but take all for oblique grids (cheap at these sizes).
    centres = idx_zyx[:, ::-1].astype(np.float64) @ a.T + origin
    half = voxel_half_extent(image)
    return centres.min(axis=0) - half, centres.max(axis=0) + half


def index_region_of_world_box(a: np.ndarray, origin: np.ndarray, size, box_min, box_max) -> Region | None:
    """The smallest index region of a grid (world = origin + a @ index) whose voxels cover the world
    box, clamped to the grid. All eight corners are mapped, so flipped and oblique grids work.
    None when the box does not intersect the grid."""
    corners = np.array([[x, y, z] for x in (box_min[0], box_max[0])
                        for y in (box_min[1], box_max[1]) for z in (box_min[2], box_max[2])])
    cont = np.linalg.solve(a, (corners - origin).T).T  # continuous indices; voxel i spans [i-0.5, i+0.5]
    # The voxels containing the extreme points; a box edge on a voxel boundary does not pull in the
    # voxel beyond it.
    lo = np.floor(cont.min(axis=0) + 0.5 + 1e-6).astype(int)
    hi = np.floor(cont.max(axis=0) + 0.5 - 1e-6).astype(int)
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, np.asarray(size) - 1)
    if np.any(hi < lo):
        return None
    return Region(tuple(int(v) for v in lo), tuple(int(v) for v in hi - lo + 1))


def world_box_to_region(image: sitk.Image, box_min: np.ndarray, box_max: np.ndarray) -> Region | None:
    """`index_region_of_world_box` for a SimpleITK image."""
    a, origin = index_to_world_matrix(image)
    return index_region_of_world_box(a, origin, image.GetSize(), box_min, box_max)


def crop_region_around_mask(
    mask: np.ndarray, mask_grid: sitk.Image, image: sitk.Image, margins_mm: tuple[float, float, float],
    max_extent_mm: tuple[float, float, float] | None = None,
) -> Region | None:
    """Bounding box of `mask` (on `mask_grid`) in physical space plus margins, as a region of `image`; with
    `max_extent_mm`, no wider than that along each world axis (kept centred on the box)."""
    box = world_bbox_of_mask(mask, mask_grid)
    if box is None:
        return None
    margins = np.asarray(margins_mm, dtype=np.float64)
    low, high = box[0] - margins, box[1] + margins
    if max_extent_mm is not None:
        centre, half = (low + high) / 2.0, np.minimum((high - low) / 2.0, np.asarray(max_extent_mm) / 2.0)
        low, high = centre - half, centre + half
    return world_box_to_region(image, low, high)


def centred_region(image: sitk.Image, extent_mm: tuple[float, float, float]) -> Region:
    """A world-axis-aligned box of `extent_mm` around the image's centre, as a region of `image`."""
    a, origin = index_to_world_matrix(image)
    centre = origin + a @ ((np.asarray(image.GetSize()) - 1) / 2.0)
    half = np.asarray(extent_mm, dtype=np.float64) / 2.0
    region = world_box_to_region(image, centre - half, centre + half)
    assert region is not None  # the centre always lies inside the image
    return region


def crop(image: sitk.Image, region: Region) -> sitk.Image:
    """The sub-image for `region`, with its physical geometry (origin shifts, direction stays)."""
    return sitk.RegionOfInterest(image, region.size, region.start)


def paste(values: np.ndarray, region: Region, full_shape_zyx: tuple[int, int, int], dtype=np.float32) -> np.ndarray:
    """A zero array of the full image's (z, y, x) shape with `values` written at `region`."""
    out = np.zeros(full_shape_zyx, dtype=dtype)
    out[region.numpy_slices] = values
    return out


def same_geometry(a: sitk.Image, b: sitk.Image, tol: float = 1e-3) -> bool:
    """Equal size, and spacing, origin and direction within `tol` (relative for spacing)."""
    if a.GetSize() != b.GetSize():
        return False
    sa, sb = np.asarray(a.GetSpacing()), np.asarray(b.GetSpacing())
    return (
        np.allclose(sa, sb, rtol=tol, atol=0)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=max(tol, tol * float(sa.max())) * 10)
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=tol)
    )


def copy_geometry(array_zyx: np.ndarray, reference: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(array_zyx)
    image.CopyInformation(reference)
    return image
