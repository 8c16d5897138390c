"""Physical-space geometry: property tests over random direction matrices, spacings and sizes."""

import numpy as np
import SimpleITK as sitk
from hypothesis import given, settings
from hypothesis import strategies as st

from pdac.infer.geometry import (
    centred_region,
    crop,
    crop_region_around_mask,
    index_to_world_matrix,
    paste,
    world_bbox_of_mask,
)


def _rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.diag(r))  # a random orthonormal matrix, flips included


@st.composite
def grids(draw):
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    size = [draw(st.integers(6, 40)) for _ in range(3)]
    spacing = [draw(st.floats(0.3, 9.0)) for _ in range(3)]
    kind = draw(st.sampled_from(["identity", "flip", "oblique"]))
    direction = {"identity": np.eye(3), "flip": np.diag(rng.choice([-1.0, 1.0], 3)),
                 "oblique": _rotation(rng)}[kind]
    image = sitk.Image(size, sitk.sitkFloat32)
    image.SetSpacing(spacing)
    image.SetDirection(direction.ravel().tolist())
    image.SetOrigin(rng.uniform(-300, 300, 3).tolist())
    mask = np.zeros(size[::-1], bool)
    lo = [draw(st.integers(0, s - 2)) for s in size[::-1]]
    hi = [draw(st.integers(a + 1, s)) for a, s in zip(lo, size[::-1], strict=True)]
    mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = True
    return image, mask, rng


def _voxel_corners_world(image, idx_xyz):
    a, origin = index_to_world_matrix(image)
    offsets = np.array([[x, y, z] for x in (-.5, .5) for y in (-.5, .5) for z in (-.5, .5)])
    return (idx_xyz[:, None, :] + offsets[None]).reshape(-1, 3) @ a.T + origin


@settings(max_examples=60, deadline=None)
@given(grids(), st.tuples(*[st.floats(0, 60)] * 3))
def test_crop_covers_the_mask_extent_plus_margins(grid, margins):
    image, mask, rng = grid
    region = crop_region_around_mask(mask, image, image, margins)
    assert region is not None
    # every voxel of the mask is inside the region
    idx = np.argwhere(mask)[:, ::-1]
    assert np.all(idx >= region.start) and np.all(idx < np.add(region.start, region.size))
    # the region covers the mask's physical box plus margins, clipped to the scan: each corner voxel of
    # the image that lies inside the expanded box lies inside the region
    box_lo, box_hi = world_bbox_of_mask(mask, image)
    box_lo, box_hi = box_lo - margins, box_hi + margins
    a, origin = index_to_world_matrix(image)
    samples = rng.integers(0, image.GetSize(), size=(300, 3))
    world = samples @ a.T + origin
    inside = np.all((world >= box_lo) & (world <= box_hi), axis=1)
    in_region = np.all((samples >= region.start) & (samples < np.add(region.start, region.size)), axis=1)
    assert np.all(in_region[inside])
    # the box of the mask really covers all of each mask voxel
    corners = _voxel_corners_world(image, idx.astype(float))
    m = np.asarray(margins)
    assert np.all(corners >= box_lo + m - 1e-6) and np.all(corners <= box_hi - m + 1e-6)


@settings(max_examples=40, deadline=None)
@given(grids())
def test_crop_then_paste_maps_back_to_exactly_the_scan_grid(grid):
    image, mask, _ = grid
    arr = np.random.default_rng(0).random(image.GetSize()[::-1]).astype(np.float32)
    scan = sitk.GetImageFromArray(arr)
    scan.CopyInformation(image)
    region = crop_region_around_mask(mask, scan, scan, (5.0, 5.0, 5.0))
    sub = crop(scan, region)
    # the crop sits at the same physical place: its first voxel is the scan's voxel at region.start
    assert np.allclose(sub.GetOrigin(), scan.TransformIndexToPhysicalPoint(region.start), atol=1e-6)
    back = paste(sitk.GetArrayFromImage(sub), region, arr.shape)
    sl = region.numpy_slices
    assert np.array_equal(back[sl], arr[sl])
    outside = np.ones(arr.shape, bool)
    outside[sl] = False
    assert not back[outside].any()


def test_empty_mask_gives_no_region_and_fallback_is_centred():
    image = sitk.Image([50, 40, 30], sitk.sitkFloat32)
    image.SetSpacing([2.0, 2.0, 3.0])
    image.SetDirection(np.diag([-1.0, 1.0, -1.0]).ravel().tolist())
    assert crop_region_around_mask(np.zeros((30, 40, 50), bool), image, image, (10, 10, 10)) is None
    region = centred_region(image, (40.0, 20.0, 30.0))
    assert region.size == (20, 10, 10)
    assert region.start == (15, 15, 10)
