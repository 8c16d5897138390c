"""One subject's tissue map -> one CT-like volume and its PANORAMA label map (SynthSeg-style).

Steps, each drawing from the case's one random stream: field of view, missing tissues (body outline, wall
muscle, fat, a spine and the great vessels where the map has none), random affine + elastic deformation,
the lesion and the hard negatives, attenuation per tissue (phase, then SynthSeg-style spread and texture),
bowel content, partial-volume blur, resampling to a random output grid (resolution, slice thickness,
orientation), bias field and noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from skimage.morphology import convex_hull_image

from pdac.lab.anatomy import HARD_NEGATIVES
from pdac.lab.cases import draw_direction
from pdac.lab.synth import lesions as lesion_model
from pdac.lab.synth.sources import Subject
from pdac.lab.synth.tissues import PANORAMA_LABEL, PHASES, IntensitySettings, Tissue, hu_range, only_phases

ORGANS_FOR_OUTLINE = [t for t in Tissue if t not in (Tissue.NONE, Tissue.LUNG, Tissue.AIR)]
BOWEL = (Tissue.STOMACH, Tissue.DUODENUM, Tissue.COLON, Tissue.SMALL_BOWEL, Tissue.RECTUM)


@dataclass(frozen=True)
class SynthSpec:
    """What to draw; the ranges are per volume."""

    lesion: bool = True
    hard_negative_probability: float = 0.35  # each of: cyst, focal fat, dilated duct (as the phantoms)
    # The slab along z: a pancreas-protocol or cut scan may start just above the gland, an abdomen-pelvis scan
    # ends some 300 mm below it (until 2026-12-07 the top was always 60+ mm above: a framing stage 1 could learn).
    fov_below_pancreas_mm: tuple[float, float] = (40, 320)
    fov_above_pancreas_mm: tuple[float, float] = (25, 180)
    # In-plane reconstruction field of view, as scanners set it (about 300-500 mm; the body may be cut): the
    # volume is not the whole map plus padding, which would teach stage 1 one framing of the body.
    fov_xy_mm: tuple[float, float] = (300.0, 500.0)
    spacing_xy_mm: tuple[float, float] = (2.0, 3.0)
    spacing_z_mm: tuple[float, float] = (2.0, 5.0)
    orientation: str = "random"  # as the phantoms: random | identity | flipped | oblique
    rotation_deg: float = 10.0
    scale: tuple[float, float] = (0.9, 1.1)
    elastic_mm: tuple[float, float] = (0.0, 6.0)  # displacement SD of the coarse B-spline grid
    intensities: IntensitySettings = field(default_factory=IntensitySettings)


def spec_with_phases(phases: tuple[str, ...] | None, spec: SynthSpec | None = None) -> SynthSpec:
    """`spec` (default settings) drawing only these contrast phases; None or empty: every phase. ValueError names
    an unknown phase."""
    spec = spec or SynthSpec()
    if not phases:
        return spec
    return replace(spec, intensities=only_phases(spec.intensities, tuple(phases)))


def _mm_to_vox(mm: float, spacing: float) -> float:
    return mm / spacing


def crop_field_of_view(subject: Subject, rng, spec: SynthSpec) -> Subject:
    """A scan-like slab: from some way below to some way above the pancreas, all of the map in-plane, padded
    in-plane so that a body outline fits (the scanner's in-plane field of view is drawn at render:
    `field_of_view`)."""
    gland = np.argwhere(np.isin(subject.tissues, lesion_model.GLAND))
    z_lo, z_hi = gland[:, 0].min(), gland[:, 0].max()
    below = int(rng.uniform(*spec.fov_below_pancreas_mm) / subject.spacing)
    above = int(rng.uniform(*spec.fov_above_pancreas_mm) / subject.spacing)
    z0, z1 = max(0, z_lo - below), min(subject.tissues.shape[0], z_hi + above + 1)
    pad = int(60 / subject.spacing)
    tissues = np.pad(subject.tissues[z0:z1], ((0, 0), (pad, pad), (pad, pad)))
    origin = subject.origin + np.array([-pad, -pad, z0]) * subject.spacing
    return Subject(subject.source, subject.name, tissues, origin, subject.spacing)


def add_missing_tissues(subject: Subject, rng) -> None:
    """Spine, aorta and IVC where the map has no bone or arteries; then the body wall around everything."""
    t, s = subject.tissues, subject.spacing
    organs = np.isin(t, ORGANS_FOR_OUTLINE)
    if not organs.any():
        return
    ys, xs = np.nonzero(organs.any(axis=0))
    kidneys = np.argwhere(t == Tissue.KIDNEY)
    gland_z = np.nonzero(np.isin(t, lesion_model.GLAND).any(axis=(1, 2)))[0]
    if not (t[gland_z.min():gland_z.max() + 1] == Tissue.BONE).any():  # no vertebra at the gland's level
        x_mid = float(np.median(kidneys[:, 2])) if len(kidneys) else float(np.median(xs))
        y_back = float(np.percentile(kidneys[:, 1], 60)) if len(kidneys) else float(np.percentile(ys, 95))
        radius = rng.uniform(15, 20) / s
        yy, xx = np.mgrid[: t.shape[1], : t.shape[2]]
        vb = ((xx - x_mid) / radius) ** 2 + ((yy - y_back) / (radius * 0.85)) ** 2 <= 1
        canal = ((xx - x_mid) / (radius * 0.5)) ** 2 + ((yy - y_back - 1.4 * radius) / (radius * 0.5)) ** 2 <= 1
        posterior = ((xx - x_mid) / (radius * 0.8)) ** 2 + ((yy - y_back - 2.0 * radius) / (radius * 0.9)) ** 2 <= 1
        muscle = sum(((xx - x_mid - side * 2.1 * radius) / (1.4 * radius)) ** 2
                     + ((yy - y_back - 1.9 * radius) / (1.2 * radius)) ** 2 <= 1 for side in (-1, 1)) > 0
        cortex = ndimage.binary_dilation(vb, iterations=1)
        for mask, tissue in ((muscle, Tissue.MUSCLE), (posterior, Tissue.BONE), (cortex, Tissue.BONE),
                             (vb, Tissue.MARROW), (canal, Tissue.SOFT_TISSUE)):
            t[:, mask] = np.where(t[:, mask] == Tissue.NONE, tissue, t[:, mask])
        if not (t == Tissue.ARTERY).any():
            for dx, dy, r, tissue in ((0.55, -1.9, 11, Tissue.ARTERY), (-1.4, -1.6, 12, Tissue.SYSTEMIC_VEIN)):
                r = rng.uniform(0.85, 1.1) * r / s
                tube = ((xx - x_mid - dx * radius) ** 2 + (yy - y_back - dy * radius) ** 2) <= r * r
                t[:, tube] = np.where(t[:, tube] == Tissue.NONE, tissue, t[:, tube])
    # The outline on a grid twice as coarse (the wall's thickness needs no finer), then back by repetition.
    coarse = np.isin(t, ORGANS_FOR_OUTLINE)[::2, ::2, ::2]
    cs = 2 * s
    inside = ndimage.binary_dilation(coarse, iterations=max(1, int(rng.uniform(3, 8) / cs)))
    # The cavity: each slice's convex hull of the organs, widened to the widest hull within 40 mm along z (a
    # body's cross-section changes slowly; slices with few labelled organs would otherwise pinch it).
    hulls = np.stack([convex_hull_image(sl) if sl.any() else sl for sl in inside])
    cavity = ndimage.maximum_filter1d(hulls, size=2 * int(40 / cs) + 1, axis=0)
    outside = np.stack([ndimage.distance_transform_edt(~sl, sampling=cs) for sl in cavity])

    def full(a):
        return a.repeat(2, 0).repeat(2, 1).repeat(2, 2)[: t.shape[0], : t.shape[1], : t.shape[2]]
    cavity, outside = full(cavity), full(outside)
    muscle_mm, fat_mm = rng.uniform(6, 14), rng.uniform(8, 35)
    t[(t == Tissue.NONE) & cavity] = Tissue.VISCERAL_FAT
    t[(t == Tissue.NONE) & (outside > 0) & (outside <= muscle_mm)] = Tissue.WALL_MUSCLE
    t[(t == Tissue.NONE) & (outside > muscle_mm) & (outside <= muscle_mm + fat_mm)] = Tissue.SUBCUTANEOUS_FAT
    t[t == Tissue.NONE] = Tissue.AIR


def random_deformation(subject: Subject, rng, spec: SynthSpec) -> sitk.Transform:
    """Random affine (rotation, scale) about the pancreas plus a smooth B-spline deformation; applied when the
    volume is resampled to its output grid (one interpolation, on the smaller grid)."""
    image = sitk.Image([int(v) for v in subject.tissues.shape[::-1]], sitk.sitkUInt8)
    image.SetOrigin(subject.origin.tolist())
    image.SetSpacing([subject.spacing] * 3)
    centre = subject.centroid_mm(Tissue.PANCREAS)
    affine = sitk.AffineTransform(3)
    affine.SetCenter((centre if centre is not None else subject.origin).tolist())
    angles = np.deg2rad(rng.uniform(-spec.rotation_deg, spec.rotation_deg, size=3))
    rot = sitk.Euler3DTransform()
    rot.SetRotation(*angles)
    matrix = np.asarray(rot.GetMatrix()).reshape(3, 3) @ np.diag(rng.uniform(*spec.scale, size=3))
    affine.SetMatrix(matrix.ravel().tolist())
    composite = sitk.CompositeTransform(3)
    composite.AddTransform(affine)
    sd = rng.uniform(*spec.elastic_mm)
    if sd > 0:
        bspline = sitk.BSplineTransformInitializer(image, [4, 4, 4], order=3)
        bspline.SetParameters(rng.normal(scale=sd, size=len(bspline.GetParameters())).tolist())
        composite.AddTransform(bspline)
    return composite


def _as_displacement_field(transform: sitk.Transform, ref: sitk.Image, step: int = 4) -> sitk.Transform:
    """The transform sampled every `step` voxels of `ref` (linear in between): far cheaper to resample with."""
    size = [int(np.ceil(n / step)) + 1 for n in ref.GetSize()]
    field_ = sitk.TransformToDisplacementField(transform, sitk.sitkVectorFloat64, size, ref.GetOrigin(),
                                               [s * step for s in ref.GetSpacing()], ref.GetDirection())
    return sitk.DisplacementFieldTransform(field_)


def add_hard_negatives(subject: Subject, rng, spec: SynthSpec, truth: dict) -> None:
    """The phantoms' hard negatives (same sizes and odds, `pdac.lab.anatomy.HARD_NEGATIVES`) in a real gland:
    a cyst, focal fatty sparing/infiltration, a dilated duct without a mass, and a liver cyst."""
    h, p, t, s = HARD_NEGATIVES, spec.hard_negative_probability, subject.tissues, subject.spacing
    axis = lesion_model.gland_axis(subject)

    def blob(centre_mm, radii_mm):
        c = np.round((np.asarray(centre_mm) - subject.origin) / s)[::-1]
        r = np.asarray(radii_mm)[::-1] / s
        lo = np.maximum(np.floor(c - r).astype(int), 0)
        hi = np.minimum(np.ceil(c + r).astype(int) + 1, t.shape)
        zz, yy, xx = np.ogrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        inside = ((zz - c[0]) / r[0]) ** 2 + ((yy - c[1]) / r[1]) ** 2 + ((xx - c[2]) / r[2]) ** 2 <= 1
        return (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2])), inside

    if rng.random() < p:
        centre = lesion_model.local_centre(subject, axis, rng.uniform(*h.t))
        sl, inside = blob(centre, [rng.uniform(*h.cyst_radius_mm)] * 3)
        region = t[sl]
        region[inside & np.isin(region, (Tissue.PANCREAS, Tissue.DUCT, Tissue.VISCERAL_FAT))] = Tissue.CYST
        truth["hard_negatives"].append("cyst")
    if rng.random() < p:
        centre = lesion_model.local_centre(subject, axis, rng.uniform(*h.t))
        sl, inside = blob(centre, rng.uniform(*h.fat_semi_axes_mm, size=3))
        region = t[sl]
        region[inside & (region == Tissue.PANCREAS)] = Tissue.FOCAL_FAT
        truth["hard_negatives"].append("focal_fat")
    if rng.random() < p and not truth.get("lesion", {}).get("duct_dilated"):
        lesion_model.draw_duct(t, subject, axis, 0.1, 0.9, float(rng.uniform(2.0, 3.5)))
        truth["hard_negatives"].append("dilated_duct")
    liver = subject.centroid_mm(Tissue.LIVER)
    if liver is not None and rng.random() < p:
        sl, inside = blob(liver + rng.uniform(-25, 25, size=3), [rng.uniform(*h.liver_cyst_radius_mm)] * 3)
        region = t[sl]
        region[inside & (region == Tissue.LIVER)] = Tissue.CYST
        truth["hard_negatives"].append("liver_cyst")


def _smooth_field(rng, shape, scale_vox: float) -> np.ndarray:
    """Unit-SD smooth noise: white noise on a grid `scale_vox` times coarser, linearly expanded."""
    factor = max(1, int(round(scale_vox)))
    coarse = rng.standard_normal([int(np.ceil(n / factor)) + 1 for n in shape]).astype(np.float32)
    up = sitk.GetArrayFromImage(sitk.Expand(sitk.GetImageFromArray(coarse), [factor] * 3, sitk.sitkLinear))
    up = up[: shape[0], : shape[1], : shape[2]]
    return up / max(float(up.std()), 1e-6)


def bowel_loops(t: np.ndarray, rng, spacing: float, ints: IntensitySettings) -> np.ndarray:
    """Where small bowel lies: loops of about `ints.loop_scale_mm` inside a small-bowel label (the rest of the
    label is mesenteric fat) and, sparser, in the unlabelled visceral fat (most maps label no small bowel)."""
    field = _smooth_field(rng, t.shape, ints.loop_scale_mm / spacing)
    packed = (t == Tissue.SMALL_BOWEL) & (field > rng.uniform(*ints.loop_threshold_in_label))
    loose = (t == Tissue.VISCERAL_FAT) & (field > rng.uniform(*ints.loop_threshold_in_fat))
    return packed | loose


def attenuation(subject: Subject, rng, spec: SynthSpec, truth: dict) -> np.ndarray:
    """HU on the working grid: a phase, one mean per tissue (or SynthSeg's random means), texture, PDAC relative
    to the parenchyma, bowel content (fluid, gas, sometimes oral contrast), focal fat below the parenchyma."""
    ints = spec.intensities
    t = subject.tissues
    phase = int(rng.choice(len(PHASES), p=ints.phase_probability))
    random_contrast = bool(rng.random() < ints.random_contrast_probability)
    means = np.zeros(max(Tissue) + 1, dtype=np.float32)
    for tissue in Tissue:
        randomised = random_contrast and tissue not in (Tissue.AIR, Tissue.LUNG)
        lo, hi = ints.random_hu if randomised else hu_range(tissue, phase)
        means[tissue] = rng.uniform(lo, hi)
    parenchyma = means[Tissue.PANCREAS]
    contrast = rng.uniform(*ints.pdac_contrast_hu[phase])
    means[Tissue.PDAC] = parenchyma - contrast
    means[Tissue.FOCAL_FAT] = parenchyma - rng.uniform(*HARD_NEGATIVES.fat_drop_hu)
    sds = rng.uniform(*ints.texture_sd_hu, size=len(means)).astype(np.float32)
    sds[[Tissue.AIR, Tissue.LUNG]] = 20
    image = means[t] + sds[t] * _smooth_field(rng, t.shape, ints.texture_scale_mm / subject.spacing)
    loops = bowel_loops(t, rng, subject.spacing, ints)
    # Fat between the loops of a small-bowel label (such labels outline the whole packet of loops).
    between = (t == Tissue.SMALL_BOWEL) & ~loops
    image[between] = means[Tissue.VISCERAL_FAT] + sds[Tissue.VISCERAL_FAT] * rng.standard_normal(
        int(between.sum()), dtype=np.float32)
    loose = loops & (t == Tissue.VISCERAL_FAT)
    image[loose] = means[Tissue.SMALL_BOWEL] + 10 * rng.standard_normal(int(loose.sum()), dtype=np.float32)
    # Content inside a wall of about one voxel: fluid or gas, sometimes oral contrast; some loops collapsed
    # (solid-looking soft tissue among fat: the look-alike of a gland that stage 1 must learn to pass over).
    hollow = (np.isin(t, BOWEL) & (t != Tissue.SMALL_BOWEL)) | loops
    collapsed = loops & (_smooth_field(rng, t.shape, 30 / subject.spacing) < rng.uniform(-0.5, 0.8))
    lumen = hollow & ~collapsed & ndimage.binary_erosion(hollow, iterations=1)
    content = rng.uniform(0, 35) + 10 * rng.standard_normal(int(lumen.sum()), dtype=np.float32)
    gas = _smooth_field(rng, t.shape, 20 / subject.spacing) > rng.uniform(0.8, 2.0)
    image[lumen] = np.where(gas[lumen], -950.0, content)
    if rng.random() < 0.2:  # positive oral contrast in some of the loops
        oral = _smooth_field(rng, t.shape, 25 / subject.spacing) > 0.8
        image[lumen & oral & ~gas] = rng.uniform(150, 350)
    truth.update(phase=PHASES[phase], random_contrast=random_contrast, parenchyma_hu=round(float(parenchyma), 1),
                 lesion_contrast_hu=round(float(contrast), 1) if truth["lesion_present"] else None)
    return image.astype(np.float32)


def panorama_labels(tissues: np.ndarray) -> np.ndarray:
    lut = np.zeros(max(Tissue) + 1, dtype=np.uint8)
    for tissue, label in PANORAMA_LABEL.items():
        lut[tissue] = label
    return lut[tissues]


FOV_GLAND_MARGIN_MM = 30.0  # the gland stays this far inside the field of view (deformation included)


def field_of_view(subject: Subject, rng, spec: SynthSpec) -> tuple[np.ndarray, np.ndarray]:
    """(centre, extent) in mm, x y z: the slab's whole z range; in-plane a random scanner field of view
    around the body's middle, shifted at random but always holding the gland."""
    shape_xyz = np.asarray(subject.tissues.shape[::-1])
    extent = shape_xyz * subject.spacing
    centre = subject.origin + (shape_xyz - 1) * subject.spacing / 2
    fov = rng.uniform(*spec.fov_xy_mm)
    gland = np.argwhere(np.isin(subject.tissues, lesion_model.GLAND))[:, ::-1]
    low = subject.origin + gland.min(axis=0) * subject.spacing - FOV_GLAND_MARGIN_MM
    high = subject.origin + gland.max(axis=0) * subject.spacing + FOV_GLAND_MARGIN_MM
    for axis in (0, 1):
        width = max(fov, high[axis] - low[axis])
        if width < extent[axis]:
            wanted = centre[axis] + rng.normal(0.0, 0.1 * width)
            centre[axis] = np.clip(wanted, high[axis] - width / 2, low[axis] + width / 2)
            extent[axis] = width
    return centre, extent


def output_grid(subject: Subject, rng, spec: SynthSpec, direction: np.ndarray):
    """A random scanner grid over the subject's field of view: spacing, size, direction (the phantoms'
    orientations)."""
    sp = np.array([rng.uniform(*spec.spacing_xy_mm)] * 2 + [rng.uniform(*spec.spacing_z_mm)])
    centre, extent = field_of_view(subject, rng, spec)
    size = np.maximum(np.round(extent / sp).astype(int), 8)
    origin = centre - (direction * sp) @ ((size - 1) / 2.0)
    return sp, size, origin


def render(subject: Subject, image: np.ndarray, labels: np.ndarray, rng, spec: SynthSpec, direction: np.ndarray,
           deformation: sitk.Transform) -> tuple[sitk.Image, sitk.Image, dict]:
    """Partial-volume blur and slice profile, resampling to the output grid, bias field, noise, int16."""
    ints = spec.intensities
    sp, size, origin = output_grid(subject, rng, spec, direction)
    pv = rng.uniform(*ints.partial_volume_sigma_mm)
    sigma_mm = np.array([np.hypot(pv, sp[2] / 2.355), np.hypot(pv, sp[1] / 2.355), np.hypot(pv, sp[0] / 2.355)])
    blurred = ndimage.gaussian_filter(image, sigma=sigma_mm / subject.spacing, truncate=2.5)
    work = sitk.GetImageFromArray(blurred)
    work_labels = sitk.GetImageFromArray(labels)
    for im in (work, work_labels):
        im.SetOrigin(subject.origin.tolist())
        im.SetSpacing([subject.spacing] * 3)
    ref = sitk.Image([int(v) for v in size], sitk.sitkFloat32)
    ref.SetSpacing(sp.tolist())
    ref.SetOrigin(origin.tolist())
    ref.SetDirection(direction.ravel().tolist())
    warp = _as_displacement_field(deformation, ref)
    out = sitk.GetArrayFromImage(sitk.Resample(work, ref, warp, sitk.sitkLinear, -1000.0))
    out_labels = sitk.Resample(work_labels, ref, warp, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    out += rng.uniform(*ints.bias_hu) * _smooth_field(rng, out.shape, max(out.shape) / 2)
    out += rng.standard_normal(out.shape, dtype=np.float32) * np.float32(rng.uniform(*ints.noise_hu))
    scan = sitk.GetImageFromArray(np.clip(np.rint(out), -1024, 3071).astype(np.int16))
    scan.CopyInformation(ref)
    out_labels.CopyInformation(ref)
    geometry = {"size": [int(v) for v in size], "spacing": [round(float(v), 4) for v in sp],
                "origin": [round(float(v), 3) for v in origin],
                "direction": [round(float(v), 6) for v in direction.ravel()]}
    return scan, out_labels, geometry


def synthesize(subject: Subject, donor: lesion_model.DonorLesion | None, seed, spec: SynthSpec = SynthSpec(),
               case: str = "synth") -> tuple[sitk.Image, sitk.Image, dict]:
    """One volume from one subject (and a donor lesion when `spec.lesion`). Deterministic per seed."""
    rng = np.random.default_rng(seed)
    direction = draw_direction(np.random.default_rng(rng.integers(2**63)), spec.orientation)
    truth = {"case": case, "subject": subject.key, "lesion_present": False, "hard_negatives": []}
    work = crop_field_of_view(subject, rng, spec)
    if not spec.lesion:  # a subject's own lesion (PanTS) becomes parenchyma in a negative case
        work.tissues[work.tissues == Tissue.PDAC] = Tissue.PANCREAS
    add_missing_tissues(work, rng)
    deformation = random_deformation(work, rng, spec)
    lesion_model.ensure_duct(work.tissues, work, rng)
    if spec.lesion and donor is not None and not (work.tissues == Tissue.PDAC).any():
        truth["lesion"] = lesion_model.transplant(work.tissues, work, donor, rng)
    elif spec.lesion and (work.tissues == Tissue.PDAC).any():
        truth["lesion"] = {"placed": True, "donor": subject.key, "location": "own"}
    truth["lesion_present"] = bool((work.tissues == Tissue.PDAC).any())
    add_hard_negatives(work, rng, spec, truth)
    image = attenuation(work, rng, spec, truth)
    scan, labels, geometry = render(work, image, panorama_labels(work.tissues), rng, spec, direction, deformation)
    if truth["lesion_present"] and not (sitk.GetArrayViewFromImage(labels) == 1).any():
        truth["lesion_present"] = False  # too small to survive the output grid
    truth.update(geometry)
    return scan, labels, truth


