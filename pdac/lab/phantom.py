"""Procedural venous-phase abdominal CECT phantoms with PANORAMA labels (synthetic data).

The anatomy lives in physical space (LPS millimetres: +x patient left, +y posterior, +z superior),
so it is the same whatever grid samples it; the grid (spacing, size, direction with flips and
oblique rotations, origin) is drawn per case. Every structure is evaluated only inside the index
region that covers its physical bounding box, which keeps full-size (512 x 512 x 300) cases fast.

`make_phantom` runs named steps in a fixed order (body, organs, bowel, vessels, pancreas, lesion placement,
ducts, hard negatives, lesion, finish), each drawing from the case's one random stream; the numbers they
draw from live in `pdac.lab.anatomy`.

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

from pdac.lab.anatomy import (
    BODY,
    BOWEL,
    DUCTS,
    FINISH,
    HARD_NEGATIVES,
    LEFT_KIDNEY,
    LESION,
    LIVER,
    PANCREAS,
    RIGHT_KIDNEY,
    SPINE,
    SPLEEN,
    VESSELS,
    Organ,
)
from pdac.lab.cases import draw_direction, make_layout, write_case
from pdac.lab.shapes import Canvas, Curve, capsule, cylinder_z, ellipsoid, irregular_blob
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
    return (sp_xy, sp_xy, sp_z), (n_xy, n_xy, n_z), draw_direction(orient_rng, spec.orientation)


# ---------------------------------------------------------------------------------------------------------
# The steps. They draw from one random stream in a fixed order (a seed always gives the same phantom), and
# paint in that order: later structures overwrite earlier ones.
# ---------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Body:
    semi_x: float
    semi_y: float
    fat: float
    z_centre: float

    @property
    def vertebra_y(self) -> float:
        return self.semi_y * SPINE.vertebra_depth

    def in_cavity(self, x, y, z):
        """Inside the abdominal wall (where organs, bowel and vessels may be)."""
        return ((x / (self.semi_x - self.fat - BODY.wall_muscle_mm)) ** 2
                + (y / (self.semi_y - self.fat - BODY.wall_muscle_mm)) ** 2 <= 1)

    def at(self, offset) -> tuple:
        """An (x, y, z offset from the centre) triple as an anatomy-frame point."""
        return (offset[0], offset[1], self.z_centre + offset[2])


@dataclass(frozen=True)
class _Pancreas:
    centre_line: Curve
    ts: np.ndarray
    radius: Callable
    parenchyma_hu: float
    box: tuple

    def point_at(self, t: float) -> np.ndarray:
        return self.centre_line.points[np.argmin(np.abs(self.ts - t))]


@dataclass(frozen=True)
class _LesionPlace:
    location: str
    t: float
    diameter: float
    centre: np.ndarray
    upstream_dilation: bool


def _draw_body_shape(rng: np.random.Generator) -> _Body:
    return _Body(rng.uniform(*BODY.semi_axis_x_mm), rng.uniform(*BODY.semi_axis_y_mm),
                 rng.uniform(*BODY.subcutaneous_fat_mm), rng.uniform(*BODY.centre_z_mm))


def _place_canvas(rng, body: _Body, spacing, size, direction) -> Canvas:
    """The scan's grid centred on the anatomy's centre, the anatomy placed anywhere in the scanner."""
    translation = rng.uniform(*BODY.placement_mm, size=3)
    centre_world = np.array([0.0, 0.0, body.z_centre]) + translation
    a = direction * np.asarray(spacing)
    origin = centre_world - a @ ((np.asarray(size) - 1) / 2.0)
    return Canvas(size, spacing, direction, origin, translation)


def _paint_slab(cv: Canvas, cylinder, hu, label=None) -> None:
    """A z-aligned cylinder painted over the whole slab."""
    inside, lo, hi = cylinder
    h = BODY.slab_half_height_mm
    cv.paint((lo[0], lo[1], -h), (hi[0], hi[1], h), inside, hu=hu, label=label)


def _paint_body(cv: Canvas, rng, body: _Body) -> None:
    """Subcutaneous fat, abdominal wall muscle, visceral fat; the spine and paraspinal muscles."""
    ax, ay, fat, big, h = body.semi_x, body.semi_y, body.fat, BODY.cylinder_half_height_mm, BODY.slab_half_height_mm
    box = (-ax, -ay, -h), (ax, ay, h)
    cv.paint(*box, cylinder_z(0, 0, ax, ay, -big, big)[0], hu=BODY.subcutaneous_fat_hu)
    cv.paint(*box, cylinder_z(0, 0, ax - fat, ay - fat, -big, big)[0], hu=BODY.wall_muscle_hu)
    cv.paint(*box, body.in_cavity, hu=float(rng.uniform(*BODY.visceral_fat_hu)))
    vy, s = body.vertebra_y, SPINE
    for side in (-1, 1):
        _paint_slab(cv, cylinder_z(side * s.paraspinal_x_mm, vy + s.posterior_mm, *s.paraspinal_semi_axes_mm,
                                    -big, big), s.paraspinal_hu)
    _paint_slab(cv, cylinder_z(0, vy, *s.cortex_semi_axes_mm, -big, big), s.cortex_hu)
    _paint_slab(cv, cylinder_z(0, vy, *s.marrow_semi_axes_mm, -big, big), float(rng.uniform(*s.marrow_hu)))
    _paint_slab(cv, cylinder_z(0, vy + s.posterior_mm, *s.posterior_element_semi_axes_mm, -big, big),
                s.posterior_element_hu)


def _paint_organs(cv: Canvas, rng, body: _Body) -> None:
    """Liver, spleen and kidneys (venous phase). The liver's attenuation is drawn before its shape."""

    def semi_axes(organ: Organ):
        return tuple(r * rng.uniform(1 - j, 1 + j) if j else r for r, j in zip(organ.semi_axes_mm, organ.jitter,
                                                                                strict=True))

    liver_hu = float(rng.uniform(*LIVER.hu))
    drawn = [(LIVER, semi_axes(LIVER), liver_hu)]
    drawn += [(organ, semi_axes(organ), float(rng.uniform(*organ.hu)))
              for organ in (SPLEEN, RIGHT_KIDNEY, LEFT_KIDNEY)]
    for organ, radii, hu in drawn:
        inside, lo, hi = ellipsoid(body.at(organ.centre_mm), radii)
        cv.paint(lo, hi, inside, hu=hu, within=body.in_cavity)


def _paint_bowel(cv: Canvas, rng, body: _Body) -> None:
    """Stomach (wall, fluid content, an anterior air pocket), the duodenum by the head and small-bowel loops
    (wall, lumen with air anteriorly)."""
    b, inner = BOWEL, body.in_cavity
    wall = tuple(r - b.stomach_wall_mm for r in b.stomach_semi_axes_mm)
    inside, lo, hi = ellipsoid(body.at(b.stomach_centre_mm), b.stomach_semi_axes_mm)
    cv.paint(lo, hi, inside, hu=b.stomach_wall_hu, within=inner)
    inside, lo, hi = ellipsoid(body.at(b.stomach_centre_mm), wall)
    cv.paint(lo, hi, inside, hu=float(rng.uniform(*b.stomach_content_hu)), within=inner)
    air, lo, hi = ellipsoid(body.at(b.stomach_air_centre_mm), b.stomach_air_semi_axes_mm)
    cv.paint(lo, hi, lambda x, y, z: air(x, y, z) & (y < b.stomach_air_below_y_mm), hu=b.air_hu, within=inner)
    start, end, radius = b.duodenum
    loops = [(body.at(start), body.at(end), radius)]
    for _ in range(int(rng.integers(*b.loops))):
        p0 = np.array([rng.uniform(*b.loop_start_x_mm),
                       rng.uniform(-body.semi_y + body.fat + b.loop_clearance_mm, b.loop_start_max_y_mm),
                       body.z_centre + rng.uniform(*b.loop_start_z_mm)])
        p1 = p0 + rng.normal(scale=b.loop_length_sd_mm, size=3)
        loops.append((p0, p1, float(rng.uniform(*b.loop_radius_mm))))
    for p0, p1, r in loops:
        dist, lo, hi = capsule(p0, p1, r)
        cv.paint(lo, hi, lambda x, y, z, d=dist, r=r: d(x, y, z) <= r, hu=b.wall_hu, within=inner)
        lumen_hu = float(rng.uniform(*b.lumen_hu))
        cy = (p0[1] + p1[1]) / 2
        cv.paint(lo, hi, lambda x, y, z, d=dist, r=r: d(x, y, z) <= r - b.wall_mm,
                 hu=lambda x, y, z, cy=cy, r=r, h=lumen_hu: np.where(y < cy - b.air_above * r, b.air_hu,
                                                                     h).astype(np.float32),
                 within=inner)


def _paint_vessels(cv: Canvas, rng, body: _Body) -> float:
    """Aorta and SMA (arteries), IVC (unlabelled), SMV and portal vein (veins). Returns the veins' HU."""
    v, big = VESSELS, BODY.cylinder_half_height_mm
    art_hu, vein_hu = float(rng.uniform(*v.artery_hu)), float(rng.uniform(*v.vein_hu))
    aorta = (v.aorta_x_mm, body.vertebra_y - v.aorta_anterior_mm)
    _paint_slab(cv, cylinder_z(*aorta, v.aorta_radius_mm, v.aorta_radius_mm, -big, big), art_hu, Label.ARTERIES)
    _paint_slab(cv, cylinder_z(v.ivc_x_mm, body.vertebra_y - v.ivc_anterior_mm, *v.ivc_semi_axes_mm, -big, big),
                vein_hu - v.ivc_darker_hu)
    (sma_start, sma_end, sma_r) = v.sma
    sma_start = (aorta[0] + sma_start[0], aorta[1] + sma_start[1], sma_start[2])
    for (p0, p1, r), hu, label in [((sma_start, sma_end, sma_r), art_hu, Label.ARTERIES),
                                   (v.smv, vein_hu, Label.VEINS), (v.portal_vein, vein_hu, Label.VEINS)]:
        dist, lo, hi = capsule(body.at(p0), body.at(p1), r)
        cv.paint(lo, hi, lambda x, y, z, d=dist, r=r: d(x, y, z) <= r, hu=hu, label=label, within=body.in_cavity)
    return vein_hu


def _paint_pancreas(cv: Canvas, rng, body: _Body, vein_hu: float) -> _Pancreas:
    """The gland (lobulated, a bulging head) and the splenic vein along its posterior surface."""
    p = PANCREAS
    ts = np.linspace(0, 1, p.samples)
    k = rng.uniform(*p.shape_scale, size=3)
    px = p.head_x_mm * k[0] + p.length_x_mm * k[0] * ts
    py = p.head_y_mm + p.y_slope_mm * k[1] * ts + p.y_bend_mm * k[1] * ts**2
    pz = body.z_centre + p.head_z_mm + p.rise_z_mm * k[2] * ts + rng.uniform(*p.z_shift_mm)
    centre_line = Curve(np.stack([px, py, pz], axis=1), ts)
    size_scale = rng.uniform(*p.size_scale)
    lobes, lobe_phase = rng.uniform(*p.lobes), rng.uniform(0, 2 * np.pi)

    def radius(t):
        base = p.body_radius_mm + p.head_extra_radius_mm * np.exp(-((t / p.head_width) ** 2))
        return (size_scale * base * (1 + p.lobulation * np.sin(2 * np.pi * lobes * t + lobe_phase))).astype(np.float32)

    gland = _Pancreas(centre_line, ts, radius, float(rng.uniform(*p.parenchyma_hu)), centre_line.box(p.box_margin_mm))
    cv.paint(*gland.box, lambda x, y, z: (lambda d, t: d <= radius(t))(*centre_line.query(x, y, z)),
             hu=gland.parenchyma_hu, label=Label.PANCREAS)
    along = ts > p.splenic_vein_from_t
    sv_points = centre_line.points[along] + np.array([0, 1, 0]) * (radius(ts[along])[:, None] + p.splenic_vein_gap_mm)
    splenic = Curve(sv_points, ts[along])
    cv.paint(*splenic.box(p.splenic_vein_box_margin_mm),
             lambda x, y, z: splenic.query(x, y, z)[0] <= p.splenic_vein_radius_mm, hu=vein_hu, label=Label.VEINS)
    return gland


def _place_lesion(rng, spec: PhantomSpec, gland: _Pancreas, truth: PhantomTruth) -> _LesionPlace:
    """Where the mass goes (drawn before the ducts: the duct upstream of it may be dilated)."""
    where = rng.choice(list(LESION.locations), p=list(LESION.location_probability))
    t = rng.uniform(*LESION.location_t[LESION.locations.index(where)])
    diameter = float(rng.uniform(*spec.lesion_diameter_mm))
    centre = gland.point_at(t) + rng.normal(scale=LESION.centre_sd_mm, size=3)
    lesion = _LesionPlace(str(where), t, diameter, centre, bool(rng.random() < LESION.upstream_dilation_probability))
    truth.lesion_diameter_mm = round(diameter, 2)
    truth.lesion_location = lesion.location
    truth.upstream_duct_dilation = lesion.upstream_dilation
    return lesion


def _paint_ducts(cv: Canvas, body: _Body, gland: _Pancreas, lesion: _LesionPlace | None, dilated: bool) -> None:
    """Pancreatic duct (dilated along the gland when `dilated`, tail-ward of an obstructing lesion) and the
    common bile duct."""
    d = DUCTS

    def duct_radius(t):
        r = np.full(t.shape, d.duct_radius_mm, dtype=np.float32)
        if dilated:
            r[:] = d.dilated_radius_mm
        if lesion is not None and lesion.upstream_dilation:
            r = np.where(t > lesion.t, d.upstream_radius_mm, r).astype(np.float32)
        return r

    t0, t1 = d.duct_t
    in_duct = lambda x, y, z: (lambda dist, t: (dist <= duct_radius(t)) & (t > t0) & (t < t1))(  # noqa: E731
        *gland.centre_line.query(x, y, z))
    cv.paint(*gland.box, in_duct, hu=d.duct_hu, label=Label.PANCREATIC_DUCT)
    head = gland.centre_line.points[0]
    obstructed = lesion is not None and lesion.location == "head" and lesion.upstream_dilation
    cbd_r = d.cbd_dilated_radius_mm if obstructed else d.cbd_radius_mm
    top, bottom = d.cbd_from_head_mm
    dist, lo, hi = capsule(head + np.array(top), head + np.array(bottom), cbd_r)
    cv.paint(lo, hi, lambda x, y, z: dist(x, y, z) <= cbd_r, hu=d.cbd_hu, label=Label.COMMON_BILE_DUCT,
             within=body.in_cavity)


def _paint_hard_negatives(cv: Canvas, rng, spec: PhantomSpec, body: _Body, gland: _Pancreas, dilated_duct: bool,
                          truth: PhantomTruth) -> None:
    h, p = HARD_NEGATIVES, spec.hard_negative_probability
    if rng.random() < p:
        c = gland.point_at(rng.uniform(*h.t))
        inside, lo, hi = ellipsoid(c, [rng.uniform(*h.cyst_radius_mm)] * 3)
        cv.paint(lo, hi, inside, hu=float(rng.uniform(*h.cyst_hu)))
        truth.hard_negatives.append("cyst")
    if rng.random() < p:
        c = gland.point_at(rng.uniform(*h.t))
        inside, lo, hi = ellipsoid(c, rng.uniform(*h.fat_semi_axes_mm, size=3))
        cv.paint(lo, hi, inside, hu=gland.parenchyma_hu - float(rng.uniform(*h.fat_drop_hu)),
                 only_labels=[Label.PANCREAS])
        truth.hard_negatives.append("focal_fat")
    if dilated_duct:
        truth.hard_negatives.append("dilated_duct")
    if rng.random() < p:
        cx, cy, cz = h.liver_cyst_centre_mm
        inside, lo, hi = ellipsoid((cx + rng.uniform(*h.liver_cyst_shift_mm), cy + rng.uniform(*h.liver_cyst_shift_mm),
                                     body.z_centre + cz), [rng.uniform(*h.liver_cyst_radius_mm)] * 3)
        cv.paint(lo, hi, inside, hu=float(rng.uniform(*h.cyst_hu)), within=body.in_cavity)
        truth.hard_negatives.append("liver_cyst")


def _paint_lesion(cv: Canvas, rng, spec: PhantomSpec, body: _Body, gland: _Pancreas, lesion: _LesionPlace,
                  truth: PhantomTruth) -> None:
    """The hypoattenuating mass, painted last (over ducts and hard negatives)."""
    contrast = float(rng.uniform(*spec.lesion_contrast_hu))
    inside, lo, hi = irregular_blob(rng, lesion.centre, lesion.diameter / 2)
    cv.paint(lo, hi, inside, hu=gland.parenchyma_hu - contrast, label=Label.PDAC, within=body.in_cavity)
    truth.lesion_contrast_hu = round(contrast, 1)
    truth.lesion_centre_world_mm = [round(float(v), 2) for v in lesion.centre + cv.translation]


def _finish(cv: Canvas, rng, spec: PhantomSpec, truth: PhantomTruth) -> tuple[sitk.Image, sitk.Image, PhantomTruth]:
    """Partial-volume smoothing, quantum noise, int16; the images' geometry and the truth's."""
    spacing = cv.spacing
    sigma_vox = [FINISH.partial_volume_sigma_mm / s for s in spacing[::-1]]
    image = ndimage.gaussian_filter(cv.image, sigma=sigma_vox, truncate=FINISH.filter_truncate)
    noise = rng.standard_normal(size=image.shape, dtype=np.float32)
    image += noise * np.float32(rng.uniform(*spec.noise_hu))
    image = np.clip(np.rint(image), *FINISH.hu_range).astype(np.int16)

    sitk_image, sitk_label = sitk.GetImageFromArray(image), sitk.GetImageFromArray(cv.label)
    for im in (sitk_image, sitk_label):
        im.SetSpacing(tuple(float(s) for s in spacing))
        im.SetOrigin(tuple(float(v) for v in cv.origin))
        im.SetDirection(tuple(float(v) for v in cv.direction.ravel()))
    truth.size = [int(s) for s in cv.size]
    truth.spacing = [round(float(s), 4) for s in spacing]
    truth.origin = [round(float(v), 3) for v in cv.origin]
    truth.direction = [round(float(v), 6) for v in cv.direction.ravel()]
    if spec.lesion and not np.any(cv.label == Label.PDAC):
        truth.lesion_present = False  # the mass fell outside the field of view
    return sitk_image, sitk_label, truth


def make_phantom(seed: int | np.random.SeedSequence, spec: PhantomSpec = PhantomSpec(), case: str = "phantom"):
    """Draw one phantom. Returns (image int16 sitk.Image, label uint8 sitk.Image, PhantomTruth)."""
    rng = np.random.default_rng(seed)
    orient_rng = np.random.default_rng(rng.integers(2**63))
    body = _draw_body_shape(rng)
    spacing, size, direction = _grid(rng, spec, body.semi_x, orient_rng)
    cv = _place_canvas(rng, body, spacing, size, direction)
    _paint_body(cv, rng, body)
    _paint_organs(cv, rng, body)
    _paint_bowel(cv, rng, body)
    vein_hu = _paint_vessels(cv, rng, body)
    gland = _paint_pancreas(cv, rng, body, vein_hu)
    truth = PhantomTruth(case=case, lesion_present=bool(spec.lesion))
    lesion = _place_lesion(rng, spec, gland, truth) if spec.lesion else None
    dilated_duct = bool(rng.random() < spec.hard_negative_probability)
    _paint_ducts(cv, body, gland, lesion, dilated_duct)
    _paint_hard_negatives(cv, rng, spec, body, gland, dilated_duct, truth)
    if lesion is not None:
        _paint_lesion(cv, rng, spec, body, gland, lesion, truth)
    return _finish(cv, rng, spec, truth)


def _case_seed(seed: int, index: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([int(seed), int(index)])


def _write_case(job) -> dict:
    out, case, seed_seq, spec, preview = job
    image, label, truth = make_phantom(seed_seq, spec, case)
    title = None
    if preview:
        what = (f"PDAC {truth.lesion_diameter_mm:.0f} mm ({truth.lesion_location})" if truth.lesion_present
                else "no PDAC")
        title = f"{case} (synthetic): {what}; hard negatives: {', '.join(truth.hard_negatives) or 'none'}"
    write_case(out, case, image, label, title)
    return asdict(truth)


def generate_dataset(out: Path, n: int, seed: int, spec: PhantomSpec = PhantomSpec(), positive_fraction: float = 0.5,
                     previews: int = 3, workers: int = 1, prefix: str = "ph") -> list[dict]:
    """Write `n` phantoms in PANORAMA/nnU-Net layout plus `truth.json`; deterministic per seed.

    Exactly round(n * positive_fraction) cases carry a lesion, in a seed-determined order."""
    out = make_layout(out)
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
