"""Procedural venous-phase abdominal CECT phantoms with PANORAMA labels (synthetic data).

The anatomy lives in physical space (LPS millimetres: +x patient left, +y posterior, +z superior),
so it is the same whatever grid samples it; the grid (spacing, size, direction with flips and
oblique rotations, origin) is drawn per case. Every structure is evaluated only inside the index
region that covers its physical bounding box, which keeps full-size (512 x 512 x 300) cases fast.

Labels: 0 background, 1 PDAC, 2 veins, 3 arteries, 4 pancreas, 5 pancreatic duct, 6 common bile duct.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from tqdm import tqdm

from pdac.infer.geometry import index_region_of_world_box
from pdac.labels import Label

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PhantomSpec:
    """What to draw. The ranges let the study make harder (smaller, subtler) benchmarks."""

    size: str = "small"  # small: ~2-3 mm voxels; full: 512 x 512 x 100-300; large: 512 x 512 x 400 (thin slices)
    lesion: bool = True
    lesion_diameter_mm: tuple[float, float] = (10.0, 40.0)
    lesion_contrast_hu: tuple[float, float] = (20.0, 60.0)  # below the parenchyma
    hard_negative_probability: float = 0.35  # each of: cyst, focal fat, dilated duct
    orientation: str = "random"  # random | identity | flipped | oblique
    noise_hu: tuple[float, float] = (8.0, 16.0)


@dataclass
class PhantomTruth:
    case: str
    lesion_present: bool
    lesion_diameter_mm: float | None = None
    lesion_centre_world_mm: list[float] | None = None
    lesion_location: str | None = None
    lesion_contrast_hu: float | None = None
    upstream_duct_dilation: bool = False
    hard_negatives: list[str] = field(default_factory=list)
    size: list[int] = field(default_factory=list)
    spacing: list[float] = field(default_factory=list)
    origin: list[float] = field(default_factory=list)
    direction: list[float] = field(default_factory=list)


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def _direction(rng: np.random.Generator, orientation: str) -> np.ndarray:
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


def _grid(rng: np.random.Generator, spec: PhantomSpec, body_half_width: float, orient_rng: np.random.Generator):
    """Spacing (x, y, z), size (x, y, z) and direction of the scan. The direction has its own random
    stream, so a seed gives the same anatomy whatever the orientation."""
    if spec.size == "small":
        sp_xy, sp_z = rng.uniform(2.0, 3.0), rng.uniform(2.0, 3.5)
        fov = 2 * body_half_width + rng.uniform(20, 60)
        n_xy = int(np.ceil(fov / sp_xy))
        n_z = int(np.ceil(rng.uniform(170, 240) / sp_z))
    elif spec.size == "full":
        n_xy = 512
        sp_xy = (2 * body_half_width + rng.uniform(20, 80)) / n_xy
        sp_z = rng.uniform(1.0, 3.0)
        n_z = int(np.clip(round(rng.uniform(220, 400) / sp_z), 100, 300))
    elif spec.size == "large":  # the memory worst case: PANORAMA's longest thin-slice scans
        n_xy, n_z = 512, 400
        sp_xy = (2 * body_half_width + rng.uniform(20, 80)) / n_xy
        sp_z = rng.uniform(0.6, 1.0)
    else:
        raise ValueError(f"unknown phantom size {spec.size!r} (small, full or large)")
    return (sp_xy, sp_xy, sp_z), (n_xy, n_xy, n_z), _direction(orient_rng, spec.orientation)


class _Canvas:
    """The image and label arrays plus the world coordinates of any sub-block, on demand."""

    def __init__(self, size, spacing, direction, origin, translation):
        self.size = size
        self.a = direction * np.asarray(spacing)
        self.origin = np.asarray(origin, dtype=np.float64)
        self.translation = np.asarray(translation, dtype=np.float64)  # anatomy frame -> world
        self.image = np.full(size[::-1], -1000.0, dtype=np.float32)
        self.label = np.zeros(size[::-1], dtype=np.uint8)

    def _region(self, lo, hi):
        """Index slices covering the anatomy-frame box [lo, hi], or None."""
        region = index_region_of_world_box(self.a, self.origin, self.size, np.asarray(lo) + self.translation,
                                           np.asarray(hi) + self.translation)
        return None if region is None else region.numpy_slices

    def coords(self, slices):
        """Anatomy-frame coordinates (x, y, z), each a float32 array of the sub-block's shape."""
        k = np.arange(slices[0].start, slices[0].stop, dtype=np.float64)[:, None, None]
        j = np.arange(slices[1].start, slices[1].stop, dtype=np.float64)[None, :, None]
        i = np.arange(slices[2].start, slices[2].stop, dtype=np.float64)[None, None, :]
        base = self.origin - self.translation
        return [
            (base[d] + self.a[d, 0] * i + self.a[d, 1] * j + self.a[d, 2] * k).astype(np.float32)
            for d in range(3)
        ]

    def paint(self, lo, hi, inside: Callable, hu=None, label=None, within=None, only_labels=None):
        """Paint voxels where inside(x, y, z) holds (and `within`, a predicate, when given, and the
        current label is one of `only_labels`, when given).

        `hu` is a constant or a function of the coordinates; returns the boolean mask (sub-block)."""
        slices = self._region(lo, hi)
        if slices is None:
            return None
        x, y, z = self.coords(slices)
        mask = inside(x, y, z)
        if within is not None:
            mask &= within(x, y, z)
        if only_labels is not None:
            mask &= np.isin(self.label[slices], only_labels)
        if hu is not None:
            values = hu(x, y, z) if callable(hu) else hu
            sub = self.image[slices]
            sub[mask] = values[mask] if isinstance(values, np.ndarray) else values
        if label is not None:
            self.label[slices][mask] = label
        return mask


def _ellipsoid(c, r):
    c, r = np.asarray(c, dtype=np.float32), np.asarray(r, dtype=np.float32)
    return (lambda x, y, z: ((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((z - c[2]) / r[2]) ** 2 <= 1,
            c - r, c + r)


def _cylinder_z(cx, cy, rx, ry, z0, z1):
    return (lambda x, y, z: (((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1) & (z >= z0) & (z <= z1),
            (cx - rx, cy - ry, z0), (cx + rx, cy + ry, z1))


def _capsule(p0, p1, radius):
    p0, p1 = np.asarray(p0, dtype=np.float64), np.asarray(p1, dtype=np.float64)
    d = p1 - p0
    length2 = float(d @ d)

    def dist(x, y, z):
        t = ((x - p0[0]) * d[0] + (y - p0[1]) * d[1] + (z - p0[2]) * d[2]) / length2
        t = np.clip(t, 0, 1)
        return np.sqrt((x - p0[0] - t * d[0]) ** 2 + (y - p0[1] - t * d[1]) ** 2 + (z - p0[2] - t * d[2]) ** 2)

    lo, hi = np.minimum(p0, p1) - radius, np.maximum(p0, p1) + radius
    return dist, lo, hi


class _Curve:
    """A sampled centreline with a radius profile; distance queries return (distance, parameter t)."""

    def __init__(self, points: np.ndarray, ts: np.ndarray):
        self.points, self.ts = points, ts

    def query(self, x, y, z):
        best = np.full(x.shape, np.inf, dtype=np.float32)
        best_t = np.zeros(x.shape, dtype=np.float32)
        for p, t in zip(self.points, self.ts, strict=True):
            d2 = (x - p[0]) ** 2 + (y - p[1]) ** 2 + (z - p[2]) ** 2
            closer = d2 < best
            best = np.where(closer, d2, best)
            best_t = np.where(closer, np.float32(t), best_t)
        return np.sqrt(best), best_t

    def box(self, margin: float):
        return self.points.min(axis=0) - margin, self.points.max(axis=0) + margin


def _irregular_blob(rng, centre, radius):
    """A lobulated mass: a sphere whose radius varies smoothly with direction."""
    dirs = rng.normal(size=(4, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    freqs = rng.uniform(0.6, 1.4, size=4) * np.pi / max(radius, 1.0)
    phases = rng.uniform(0, 2 * np.pi, size=4)
    c = np.asarray(centre, dtype=np.float32)

    def inside(x, y, z):
        dx, dy, dz = x - c[0], y - c[1], z - c[2]
        wobble = sum(np.sin(f * (u[0] * dx + u[1] * dy + u[2] * dz) + ph)
                     for u, f, ph in zip(dirs, freqs, phases, strict=True)) / 4
        return dx * dx + dy * dy + dz * dz <= (radius * (1 + 0.22 * wobble)) ** 2

    return inside, c - 1.3 * radius, c + 1.3 * radius


def make_phantom(seed: int | np.random.SeedSequence, spec: PhantomSpec = PhantomSpec(), case: str = "phantom"):
    """Draw one phantom. Returns (image int16 sitk.Image, label uint8 sitk.Image, PhantomTruth)."""
    rng = np.random.default_rng(seed)
    orient_rng = np.random.default_rng(rng.integers(2**63))
    ax, ay = rng.uniform(140, 175), rng.uniform(100, 125)  # body semi-axes
    fat = rng.uniform(10, 28)
    z_centre = rng.uniform(-25, 25)
    spacing, size, direction = _grid(rng, spec, ax, orient_rng)
    translation = rng.uniform(-150, 150, size=3)
    centre_world = np.array([0.0, 0.0, z_centre]) + translation
    a = direction * np.asarray(spacing)
    origin = centre_world - a @ ((np.asarray(size) - 1) / 2.0)
    cv = _Canvas(size, spacing, direction, origin, translation)

    z_lo, z_hi = -400.0, 400.0
    big = 1000.0
    inner = lambda x, y, z: (x / (ax - fat - 8)) ** 2 + (y / (ay - fat - 8)) ** 2 <= 1  # noqa: E731

    # Body: subcutaneous fat, abdominal wall muscle, visceral fat.
    cv.paint((-ax, -ay, z_lo), (ax, ay, z_hi), _cylinder_z(0, 0, ax, ay, -big, big)[0], hu=-100.0)
    cv.paint((-ax, -ay, z_lo), (ax, ay, z_hi), _cylinder_z(0, 0, ax - fat, ay - fat, -big, big)[0], hu=45.0)
    cv.paint((-ax, -ay, z_lo), (ax, ay, z_hi), inner, hu=float(rng.uniform(-95, -60)))
    # Spine and paraspinal muscles.
    vy = ay * 0.5
    for side in (-1, 1):
        m, lo, hi = _cylinder_z(side * 32, vy + 30, 24, 20, -big, big)
        cv.paint((lo[0], lo[1], z_lo), (hi[0], hi[1], z_hi), m, hu=50.0)
    m, lo, hi = _cylinder_z(0, vy, 19, 17, -big, big)
    cv.paint((lo[0], lo[1], z_lo), (hi[0], hi[1], z_hi), m, hu=650.0)
    m, lo, hi = _cylinder_z(0, vy, 16.5, 14.5, -big, big)
    cv.paint((lo[0], lo[1], z_lo), (hi[0], hi[1], z_hi), m, hu=float(rng.uniform(200, 280)))
    m, lo, hi = _cylinder_z(0, vy + 30, 10, 13, -big, big)
    cv.paint((lo[0], lo[1], z_lo), (hi[0], hi[1], z_hi), m, hu=450.0)

    # Solid organs (venous phase).
    jitter = lambda s: rng.uniform(1 - s, 1 + s)  # noqa: E731
    liver_hu = float(rng.uniform(95, 125))
    for c, r, hu in [
        ((-70, -5, z_centre + 75), (85 * jitter(.1), 80 * jitter(.1), 85), liver_hu),
        ((95, 40, z_centre + 60), (35, 30, 55 * jitter(.15)), float(rng.uniform(105, 130))),
        ((-72, 50, z_centre - 15), (27, 22, 50), float(rng.uniform(150, 190))),
        ((72, 50, z_centre - 5), (27, 22, 50), float(rng.uniform(150, 190))),
    ]:
        m, lo, hi = _ellipsoid(c, r)
        cv.paint(lo, hi, m, hu=hu, within=inner)

    # Stomach and bowel loops (wall, fluid content, air pockets anteriorly), the duodenum by the head.
    loops = [((-65, -2, z_centre + 5), (-58, 6, z_centre - 40), 12.0)]
    m, lo, hi = _ellipsoid((40, -45, z_centre + 55), (50, 32, 40))
    cv.paint(lo, hi, m, hu=40.0, within=inner)
    m, lo, hi = _ellipsoid((40, -45, z_centre + 55), (46, 28, 36))
    cv.paint(lo, hi, m, hu=float(rng.uniform(5, 30)), within=inner)
    m, lo, hi = _ellipsoid((40, -60, z_centre + 55), (35, 14, 25))
    cv.paint(lo, hi, lambda x, y, z: m(x, y, z) & (y < -55), hu=-950.0, within=inner)
    for _ in range(int(rng.integers(5, 10))):
        p0 = np.array([rng.uniform(-100, 100), rng.uniform(-ay + fat + 20, -15), z_centre + rng.uniform(-110, 0)])
        p1 = p0 + rng.normal(scale=35, size=3)
        loops.append((p0, p1, float(rng.uniform(9, 16))))
    for p0, p1, r in loops:
        dist, lo, hi = _capsule(p0, p1, r)
        cv.paint(lo, hi, lambda x, y, z, d=dist, r=r: d(x, y, z) <= r, hu=45.0, within=inner)
        lumen_hu = float(rng.uniform(0, 40))
        cy = (p0[1] + p1[1]) / 2
        cv.paint(lo, hi, lambda x, y, z, d=dist, r=r: d(x, y, z) <= r - 2.5,
                 hu=lambda x, y, z, cy=cy, r=r, h=lumen_hu: np.where(y < cy - 0.35 * r, -950.0, h).astype(np.float32),
                 within=inner)

    # Vessels: aorta and SMA (arteries), IVC (unlabelled), portal vein / SMV and splenic vein (veins).
    art_hu, vein_hu = float(rng.uniform(150, 200)), float(rng.uniform(140, 180))
    aorta = (12.0, vy - 30)
    m, lo, hi = _cylinder_z(aorta[0], aorta[1], 11, 11, -big, big)
    cv.paint((lo[0], lo[1], z_lo), (hi[0], hi[1], z_hi), m, hu=art_hu, label=Label.ARTERIES)
    m, lo, hi = _cylinder_z(-25, vy - 28, 12, 10, -big, big)
    cv.paint((lo[0], lo[1], z_lo), (hi[0], hi[1], z_hi), m, hu=vein_hu - 10)
    for p0, p1, r, hu, lab in [
        ((aorta[0], aorta[1] - 8, z_centre + 15), (8, -2, z_centre - 80), 4.0, art_hu, Label.ARTERIES),
        ((-8, -14, z_centre - 80), (-8, -12, z_centre + 8), 6.5, vein_hu, Label.VEINS),
        ((-8, -12, z_centre + 8), (-50, 0, z_centre + 45), 7.0, vein_hu, Label.VEINS),
    ]:
        dist, lo, hi = _capsule(p0, p1, r)
        cv.paint(lo, hi, lambda x, y, z, d=dist, r=r: d(x, y, z) <= r, hu=hu, label=lab, within=inner)

    # Pancreas: a curved tube from the head (patient right, anterior, caudal) across the midline
    # to the tail at the splenic hilum.
    ts = np.linspace(0, 1, 72)
    k = rng.uniform(0.85, 1.15, size=3)
    px = -45 * k[0] + 140 * k[0] * ts
    py = 5 - 65 * k[1] * ts + 100 * k[1] * ts**2
    pz = z_centre - 15 + 25 * k[2] * ts + rng.uniform(-5, 5)
    centre_line = _Curve(np.stack([px, py, pz], axis=1), ts)
    size_scale = rng.uniform(0.85, 1.15)
    lobes, lobe_phase = rng.uniform(4, 9), rng.uniform(0, 2 * np.pi)

    def pancreas_radius(t):
        base = 8.5 + 8 * np.exp(-((t / 0.2) ** 2))
        return (size_scale * base * (1 + 0.08 * np.sin(2 * np.pi * lobes * t + lobe_phase))).astype(np.float32)

    parenchyma_hu = float(rng.uniform(95, 125))
    pancreas_box = centre_line.box(20)
    cv.paint(*pancreas_box, lambda x, y, z: (lambda d, t: d <= pancreas_radius(t))(*centre_line.query(x, y, z)),
             hu=parenchyma_hu, label=Label.PANCREAS)

    # Splenic vein along the posterior surface of body and tail.
    sv_points = centre_line.points[ts > 0.3] + np.array([0, 1, 0]) * (pancreas_radius(ts[ts > 0.3])[:, None] + 3)
    splenic = _Curve(sv_points, ts[ts > 0.3])
    cv.paint(*splenic.box(6), lambda x, y, z: splenic.query(x, y, z)[0] <= 3.5, hu=vein_hu, label=Label.VEINS)

    truth = PhantomTruth(case=case, lesion_present=bool(spec.lesion))
    # Lesion placement (drawn first: the duct upstream of it may be dilated).
    if spec.lesion:
        where = rng.choice(["head", "body", "tail"], p=[0.6, 0.25, 0.15])
        t_range = {"head": (0.03, 0.22), "body": (0.25, 0.6), "tail": (0.6, 0.92)}[where]
        t_lesion = rng.uniform(*t_range)
        diameter = float(rng.uniform(*spec.lesion_diameter_mm))
        centre = centre_line.points[np.argmin(np.abs(ts - t_lesion))] + rng.normal(scale=2.0, size=3)
        dilated = bool(rng.random() < 0.5)
        truth.lesion_diameter_mm = round(diameter, 2)
        truth.lesion_location = str(where)
        truth.upstream_duct_dilation = dilated
    dilated_duct_negative = bool(rng.random() < spec.hard_negative_probability)

    def duct_radius(t):
        r = np.full(t.shape, 1.3, dtype=np.float32)
        if dilated_duct_negative:
            r[:] = 3.2
        if spec.lesion and truth.upstream_duct_dilation:
            r = np.where(t > t_lesion, 3.5, r).astype(np.float32)
        return r

    in_duct = lambda x, y, z: (lambda d, t: (d <= duct_radius(t)) & (t > 0.02) & (t < 0.95))(  # noqa: E731
        *centre_line.query(x, y, z))
    cv.paint(*pancreas_box, in_duct, hu=15.0, label=Label.PANCREATIC_DUCT)
    # Common bile duct: from the liver hilum down into the pancreatic head.
    head = centre_line.points[0]
    cbd_r = 5.0 if (spec.lesion and truth.lesion_location == "head" and truth.upstream_duct_dilation) else 3.0
    dist, lo, hi = _capsule(head + np.array([-3, 6, 70]), head + np.array([2, 4, 0]), cbd_r)
    cv.paint(lo, hi, lambda x, y, z: dist(x, y, z) <= cbd_r, hu=10.0, label=Label.COMMON_BILE_DUCT, within=inner)

    # Hard negatives inside the pancreas: a cyst (sharp, water) and focal fat (ill-defined, low).
    if rng.random() < spec.hard_negative_probability:
        t = rng.uniform(0.1, 0.9)
        c = centre_line.points[np.argmin(np.abs(ts - t))]
        m, lo, hi = _ellipsoid(c, [rng.uniform(3, 9)] * 3)
        cv.paint(lo, hi, m, hu=float(rng.uniform(0, 15)))
        truth.hard_negatives.append("cyst")
    if rng.random() < spec.hard_negative_probability:
        t = rng.uniform(0.1, 0.9)
        c = centre_line.points[np.argmin(np.abs(ts - t))]
        m, lo, hi = _ellipsoid(c, rng.uniform(5, 11, size=3))
        cv.paint(lo, hi, m, hu=parenchyma_hu - float(rng.uniform(35, 70)),
                 only_labels=[Label.PANCREAS])
        truth.hard_negatives.append("focal_fat")
    if dilated_duct_negative:
        truth.hard_negatives.append("dilated_duct")
    if rng.random() < spec.hard_negative_probability:
        m, lo, hi = _ellipsoid((-70 + rng.uniform(-30, 30), -5 + rng.uniform(-30, 30), z_centre + 60),
                               [rng.uniform(5, 15)] * 3)
        cv.paint(lo, hi, m, hu=float(rng.uniform(0, 15)), within=inner)
        truth.hard_negatives.append("liver_cyst")

    if spec.lesion:
        contrast = float(rng.uniform(*spec.lesion_contrast_hu))
        m, lo, hi = _irregular_blob(rng, centre, diameter / 2)
        cv.paint(lo, hi, m, hu=parenchyma_hu - contrast, label=Label.PDAC, within=inner)
        truth.lesion_contrast_hu = round(contrast, 1)
        truth.lesion_centre_world_mm = [round(float(v), 2) for v in centre + translation]

    # Partial-volume smoothing and quantum noise.
    image = cv.image
    sigma_vox = [0.7 / s for s in spacing[::-1]]
    image = ndimage.gaussian_filter(image, sigma=sigma_vox, truncate=3.0)
    noise = rng.standard_normal(size=image.shape, dtype=np.float32)
    image += noise * np.float32(rng.uniform(*spec.noise_hu))
    image = np.clip(np.rint(image), -1024, 3071).astype(np.int16)

    sitk_image, sitk_label = sitk.GetImageFromArray(image), sitk.GetImageFromArray(cv.label)
    for im in (sitk_image, sitk_label):
        im.SetSpacing(tuple(float(s) for s in spacing))
        im.SetOrigin(tuple(float(v) for v in origin))
        im.SetDirection(tuple(float(v) for v in direction.ravel()))
    truth.size = [int(s) for s in size]
    truth.spacing = [round(float(s), 4) for s in spacing]
    truth.origin = [round(float(v), 3) for v in origin]
    truth.direction = [round(float(v), 6) for v in direction.ravel()]
    if spec.lesion and not np.any(cv.label == Label.PDAC):
        truth.lesion_present = False  # the mass fell outside the field of view
    return sitk_image, sitk_label, truth


def _case_seed(seed: int, index: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([int(seed), int(index)])


def _write_case(job) -> dict:
    out, case, seed_seq, spec, preview = job
    image, label, truth = make_phantom(seed_seq, spec, case)
    sitk.WriteImage(image, str(out / "imagesTr" / f"{case}_0000.nii.gz"), useCompression=True)
    sitk.WriteImage(label, str(out / "labelsTr" / f"{case}.nii.gz"), useCompression=True)
    if preview:
        from pdac.infer.overlay import save_label_preview

        what = (f"PDAC {truth.lesion_diameter_mm:.0f} mm ({truth.lesion_location})" if truth.lesion_present
                else "no PDAC")
        negs = ", ".join(truth.hard_negatives) or "none"
        save_label_preview(image, label, out / "previews" / f"{case}.png",
                           f"{case} (synthetic): {what}; hard negatives: {negs}")
    return asdict(truth)


def generate_dataset(out: Path, n: int, seed: int, spec: PhantomSpec = PhantomSpec(), positive_fraction: float = 0.5,
                     previews: int = 3, workers: int = 1, prefix: str = "ph") -> list[dict]:
    """Write `n` phantoms in PANORAMA/nnU-Net layout plus `truth.json`; deterministic per seed.

    Exactly round(n * positive_fraction) cases carry a lesion, in a seed-determined order."""
    out = Path(out)
    for sub in ("imagesTr", "labelsTr"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng([int(seed), 10**6]).permutation(n)
    n_pos = int(round(n * positive_fraction))
    jobs = []
    for i in range(n):
        case = f"{prefix}{seed}_{i:05d}"
        case_spec = PhantomSpec(**{**asdict(spec), "lesion": bool(order[i] < n_pos)})
        jobs.append((out, case, _case_seed(seed, i), case_spec, i < previews))
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            truths = list(tqdm(pool.map(_write_case, jobs), total=n, desc="phantoms", unit="case"))
    else:
        truths = [_write_case(job) for job in tqdm(jobs, desc="phantoms", unit="case")]
    (out / "truth.json").write_text(json.dumps({"synthetic": True, "seed": seed, "spec": asdict(spec),
                                                "cases": truths}, indent=1))
    log.info("wrote %d synthetic phantoms (%d with PDAC) to %s", n, sum(t["lesion_present"] for t in truths), out)
    return truths
