"""Real PDAC shapes placed where real PDAC sits: a bank of PANORAMA's hand-drawn lesions, transplanted into
other patients' glands (Hu et al., CVPR 2023 and Li et al. 2023 place synthetic tumours in real organs; here
the shape and position are real too).

A lesion is described relative to its gland: the position along the gland's head-to-tail axis (t in [0, 1],
head = patient right), its offset from the gland's local centre, its shape on the working grid, and whether
the duct tail-ward of it was dilated in the donor (the obstruction sign radiologists look for).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from pdac.lab.synth.sources import Subject
from pdac.lab.synth.tissues import Tissue

GLAND = (Tissue.PANCREAS, Tissue.DUCT, Tissue.PDAC, Tissue.CYST, Tissue.FOCAL_FAT)
# Where a transplanted lesion may grow: the gland and the fat around it (never bone, vessels or other organs).
LESION_MAY_REPLACE = (Tissue.NONE, Tissue.PANCREAS, Tissue.DUCT, Tissue.BILE_DUCT, Tissue.CYST, Tissue.FOCAL_FAT,
                      Tissue.VISCERAL_FAT)
DILATED_DUCT_ML = 0.8  # donor duct volume tail-ward of the lesion above which the duct counts as dilated
LOCATIONS = ((0.0, 0.35, "head"), (0.35, 0.65, "body"), (1.0, 1.01, "tail"))


@dataclass(frozen=True)
class GlandAxis:
    """The gland's principal axis: t = 0 at the patient-right end (head), 1 at the tail."""

    origin: np.ndarray  # mm, the head end
    direction: np.ndarray  # unit vector head -> tail
    length: float

    def t_of(self, points_mm: np.ndarray) -> np.ndarray:
        return (points_mm - self.origin) @ self.direction / self.length


def voxel_points(subject: Subject, mask: np.ndarray) -> np.ndarray:
    idx = np.argwhere(mask)
    return subject.origin + idx[:, ::-1] * subject.spacing


def gland_axis(subject: Subject) -> GlandAxis:
    points = voxel_points(subject, np.isin(subject.tissues, GLAND))
    centre = points.mean(axis=0)
    _, _, vt = np.linalg.svd(points - centre, full_matrices=False)
    axis = vt[0] if vt[0][0] > 0 else -vt[0]  # head (patient right, -x in LPS) to tail
    proj = (points - centre) @ axis
    lo, hi = float(proj.min()), float(proj.max())
    return GlandAxis(centre + lo * axis, axis, max(hi - lo, 1.0))


def local_centre(subject: Subject, axis: GlandAxis, t: float, width: float = 0.06) -> np.ndarray:
    points = voxel_points(subject, np.isin(subject.tissues, GLAND))
    ts = axis.t_of(points)
    near = np.abs(ts - t) <= width
    return points[near].mean(axis=0) if near.any() else points[np.argmin(np.abs(ts - t))]


def location_name(t: float) -> str:
    for lo, hi, name in LOCATIONS:
        if lo <= t < hi:
            return name
    return "tail"


@dataclass(frozen=True)
class DonorLesion:
    donor: str  # the PANORAMA case it comes from
    shape: np.ndarray  # bool (z, y, x) on the working grid, cropped to the lesion
    t: float
    offset_mm: np.ndarray  # lesion centroid minus the donor gland's local centre
    volume_ml: float
    duct_dilated: bool

    @property
    def location(self) -> str:
        return location_name(self.t)


def extract_lesion(subject: Subject) -> DonorLesion | None:
    """The largest PDAC component of a map, relative to its gland; None when the map has no lesion."""
    lesion = subject.tissues == Tissue.PDAC
    if not lesion.any():
        return None
    components, n = ndimage.label(lesion)
    if n > 1:
        sizes = ndimage.sum(lesion, components, range(1, n + 1))
        lesion = components == (int(np.argmax(sizes)) + 1)
    axis = gland_axis(subject)
    centroid = voxel_points(subject, lesion).mean(axis=0)
    t = float(np.clip(axis.t_of(centroid[None])[0], 0, 1))
    box = ndimage.find_objects(lesion.astype(np.uint8))[0]
    duct = voxel_points(subject, subject.tissues == Tissue.DUCT)
    tailward = duct[axis.t_of(duct) > t + 0.05] if len(duct) else duct
    ml = subject.spacing**3 / 1000
    return DonorLesion(subject.key, lesion[box].copy(), t, centroid - local_centre(subject, axis, t),
                       float(lesion.sum() * ml), bool(len(tailward) * ml > DILATED_DUCT_ML))


def transplant(tissues: np.ndarray, subject: Subject, lesion: DonorLesion, rng: np.random.Generator) -> dict:
    """Paint `lesion` into `tissues` (the subject's grid, modified in place) at the same relative position in
    this gland, scaled by a small random factor; dilate the duct tail-ward when the donor's was. Returns what
    was placed (for truth.json)."""
    axis = gland_axis(subject)
    t = float(np.clip(lesion.t + rng.normal(scale=0.05), 0.02, 0.98))
    scale = float(rng.uniform(0.8, 1.2))
    shape = ndimage.zoom(lesion.shape.astype(np.float32), scale, order=1) > 0.5
    if not shape.any():
        shape = lesion.shape
    if rng.random() < 0.5:  # mirror head-feet: another plausible shape from the same lesion
        shape = shape[::-1]
    centre_mm = local_centre(subject, axis, t) + lesion.offset_mm * scale * 0.5
    centre_idx = np.round((centre_mm - subject.origin) / subject.spacing)[::-1].astype(int)
    start = centre_idx - np.asarray(shape.shape) // 2
    dst = [slice(max(0, s), min(n, s + k)) for s, k, n in zip(start, shape.shape, tissues.shape, strict=True)]
    src = [slice(d.start - s, d.stop - s) for d, s in zip(dst, start, strict=True)]
    if any(d.stop <= d.start for d in dst):
        return {"placed": False}
    region = tissues[tuple(dst)]
    paint = shape[tuple(src)] & np.isin(region, LESION_MAY_REPLACE)
    region[paint] = Tissue.PDAC
    dilated = lesion.duct_dilated or (lesion.location == "head" and rng.random() < 0.5)
    if dilated:
        dilate_duct(tissues, subject, axis, t, radius_mm=float(rng.uniform(2.0, 4.0)))
    return {"placed": bool(paint.any()), "donor": lesion.donor, "t": round(t, 3), "location": location_name(t),
            "volume_ml": round(float(paint.sum()) * subject.spacing**3 / 1000, 2), "duct_dilated": dilated}


def centreline(subject: Subject, axis: GlandAxis, tissues: np.ndarray,
               bins: int = 24) -> list[tuple[float, np.ndarray]]:
    points = voxel_points(subject, np.isin(tissues, GLAND))
    ts = axis.t_of(points)
    line = []
    for lo in np.linspace(0, 1, bins, endpoint=False):
        sel = (ts >= lo) & (ts < lo + 1 / bins)
        if sel.any():
            line.append((float(lo + 0.5 / bins), points[sel].mean(axis=0)))
    return line


def draw_duct(tissues: np.ndarray, subject: Subject, axis: GlandAxis, t_from: float, t_to: float,
              radius_mm: float) -> int:
    """A tube along the gland's centreline between t_from and t_to, painted where the gland is."""
    line = [p for t, p in centreline(subject, axis, tissues) if t_from <= t <= t_to]
    if len(line) < 2:
        return 0
    zz, yy, xx = np.indices(tissues.shape, sparse=True)
    painted = 0
    for p0, p1 in zip(line[:-1], line[1:], strict=True):
        lo = np.floor((np.minimum(p0, p1) - radius_mm - subject.origin) / subject.spacing).astype(int)
        hi = np.ceil((np.maximum(p0, p1) + radius_mm - subject.origin) / subject.spacing).astype(int) + 1
        lo, hi = np.maximum(lo, 0), np.minimum(hi, tissues.shape[::-1])
        if np.any(hi <= lo):
            continue
        sl = (slice(lo[2], hi[2]), slice(lo[1], hi[1]), slice(lo[0], hi[0]))
        x = subject.origin[0] + xx[..., sl[2]] * subject.spacing
        y = subject.origin[1] + yy[:, sl[1], :] * subject.spacing
        z = subject.origin[2] + zz[sl[0]] * subject.spacing
        d = p1 - p0
        u = np.clip(((x - p0[0]) * d[0] + (y - p0[1]) * d[1] + (z - p0[2]) * d[2]) / max(float(d @ d), 1e-6), 0, 1)
        dist2 = (x - p0[0] - u * d[0]) ** 2 + (y - p0[1] - u * d[1]) ** 2 + (z - p0[2] - u * d[2]) ** 2
        region = tissues[sl]
        inside = (dist2 <= radius_mm**2) & np.isin(region, (Tissue.PANCREAS, Tissue.FOCAL_FAT))
        region[inside] = Tissue.DUCT
        painted += int(inside.sum())
    return painted


def dilate_duct(tissues: np.ndarray, subject: Subject, axis: GlandAxis, t_lesion: float, radius_mm: float) -> int:
    """The obstructed duct: wide from just tail-ward of the lesion to near the tail."""
    return draw_duct(tissues, subject, axis, t_lesion + 0.08, 0.95, radius_mm)


def ensure_duct(tissues: np.ndarray, subject: Subject, rng: np.random.Generator) -> None:
    """A thin main duct where the map has none (WORD, AMOS and TotalSegmentator do not label it)."""
    if (tissues == Tissue.DUCT).sum() * subject.spacing**3 / 1000 > 0.05:
        return
    draw_duct(tissues, subject, gland_axis(subject), 0.1, 0.9, float(rng.uniform(1.0, 1.6)))
