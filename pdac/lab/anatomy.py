"""The phantoms' anatomy in numbers: every size, position and attenuation `pdac.lab.phantom` draws from.

Millimetres in the anatomy frame (x patient left, y posterior, z superior, the body's axis at x = y = 0),
HU in the venous phase; a pair (low, high) is a uniform draw per case, and z offsets are relative to the
case's cranio-caudal centre. Changing a value changes every seed's phantom.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BodyConstants:
    semi_axis_x_mm: tuple[float, float] = (140, 175)  # the body's elliptic cross-section
    semi_axis_y_mm: tuple[float, float] = (100, 125)
    subcutaneous_fat_mm: tuple[float, float] = (10, 28)
    centre_z_mm: tuple[float, float] = (-25, 25)
    placement_mm: tuple[float, float] = (-150, 150)  # per axis: the anatomy frame's offset in the scanner
    wall_muscle_mm: float = 8  # between the subcutaneous fat and the abdominal cavity
    subcutaneous_fat_hu: float = -100.0
    wall_muscle_hu: float = 45.0
    visceral_fat_hu: tuple[float, float] = (-95, -60)
    slab_half_height_mm: float = 400.0  # how far up and down the body (and the spine, aorta, IVC) is painted
    cylinder_half_height_mm: float = 1000.0


@dataclass(frozen=True)
class SpineConstants:
    vertebra_depth: float = 0.5  # vertebral body centre at y = this x the body's y semi-axis
    paraspinal_x_mm: float = 32  # either side of the midline
    posterior_mm: float = 30  # paraspinal muscles and posterior elements behind the vertebral body
    paraspinal_semi_axes_mm: tuple[float, float] = (24, 20)
    paraspinal_hu: float = 50.0
    cortex_semi_axes_mm: tuple[float, float] = (19, 17)
    cortex_hu: float = 650.0
    marrow_semi_axes_mm: tuple[float, float] = (16.5, 14.5)
    marrow_hu: tuple[float, float] = (200, 280)
    posterior_element_semi_axes_mm: tuple[float, float] = (10, 13)
    posterior_element_hu: float = 450.0


@dataclass(frozen=True)
class Organ:
    """An ellipsoid; `jitter` scales each semi-axis by a uniform draw in [1 - j, 1 + j] (0: fixed)."""

    centre_mm: tuple[float, float, float]
    semi_axes_mm: tuple[float, float, float]
    jitter: tuple[float, float, float]
    hu: tuple[float, float]


LIVER = Organ((-70, -5, 75), (85, 80, 85), (.1, .1, 0), (95, 125))
SPLEEN = Organ((95, 40, 60), (35, 30, 55), (0, 0, .15), (105, 130))
RIGHT_KIDNEY = Organ((-72, 50, -15), (27, 22, 50), (0, 0, 0), (150, 190))
LEFT_KIDNEY = Organ((72, 50, -5), (27, 22, 50), (0, 0, 0), (150, 190))


@dataclass(frozen=True)
class BowelConstants:
    stomach_centre_mm: tuple[float, float, float] = (40, -45, 55)
    stomach_semi_axes_mm: tuple[float, float, float] = (50, 32, 40)
    stomach_wall_mm: float = 4
    stomach_wall_hu: float = 40.0
    stomach_content_hu: tuple[float, float] = (5, 30)
    stomach_air_centre_mm: tuple[float, float, float] = (40, -60, 55)
    stomach_air_semi_axes_mm: tuple[float, float, float] = (35, 14, 25)
    stomach_air_below_y_mm: float = -55  # the air pocket is anterior (non-dependent)
    duodenum: tuple = ((-65, -2, 5), (-58, 6, -40), 12.0)  # capsule: start, end, radius
    loops: tuple[int, int] = (5, 10)  # number of small-bowel loops (high exclusive)
    loop_start_x_mm: tuple[float, float] = (-100, 100)
    loop_clearance_mm: float = 20  # loops start at least this far inside the subcutaneous fat, anteriorly
    loop_start_max_y_mm: float = -15
    loop_start_z_mm: tuple[float, float] = (-110, 0)
    loop_length_sd_mm: float = 35  # each loop's end: its start plus a normal offset per axis
    loop_radius_mm: tuple[float, float] = (9, 16)
    wall_hu: float = 45.0
    wall_mm: float = 2.5
    lumen_hu: tuple[float, float] = (0, 40)
    air_above: float = 0.35  # air fills the lumen anterior of the loop's centre by this x its radius
    air_hu: float = -950.0


@dataclass(frozen=True)
class VesselConstants:
    artery_hu: tuple[float, float] = (150, 200)
    vein_hu: tuple[float, float] = (140, 180)
    aorta_x_mm: float = 12.0
    aorta_anterior_mm: float = 30  # in front of the vertebral body
    aorta_radius_mm: float = 11
    ivc_x_mm: float = -25
    ivc_anterior_mm: float = 28
    ivc_semi_axes_mm: tuple[float, float] = (12, 10)
    ivc_darker_hu: float = 10  # than the portal system
    sma: tuple = ((0, -8, 15), (8, -2, -80), 4.0)  # start relative to the aorta's axis (x, y) and the centre (z)
    smv: tuple = ((-8, -14, -80), (-8, -12, 8), 6.5)
    portal_vein: tuple = ((-8, -12, 8), (-50, 0, 45), 7.0)


@dataclass(frozen=True)
class PancreasConstants:
    """A curved tube from the head (patient right, anterior, caudal) across the midline to the tail at the
    splenic hilum, parameterised by t in [0, 1] (head to tail)."""

    samples: int = 72
    shape_scale: tuple[float, float] = (0.85, 1.15)  # per axis, of the centreline's extent
    head_x_mm: float = -45
    length_x_mm: float = 140
    head_y_mm: float = 5
    y_slope_mm: float = -65  # y(t) = head + slope t + bend t^2: forward over the spine, back to the hilum
    y_bend_mm: float = 100
    head_z_mm: float = -15
    rise_z_mm: float = 25
    z_shift_mm: tuple[float, float] = (-5, 5)
    size_scale: tuple[float, float] = (0.85, 1.15)
    body_radius_mm: float = 8.5
    head_extra_radius_mm: float = 8  # a Gaussian bulge at the head
    head_width: float = 0.2  # in t
    lobes: tuple[float, float] = (4, 9)  # lobulations along the gland
    lobulation: float = 0.08  # relative radius amplitude
    parenchyma_hu: tuple[float, float] = (95, 125)
    box_margin_mm: float = 20
    splenic_vein_from_t: float = 0.3  # along the posterior surface of body and tail
    splenic_vein_gap_mm: float = 3
    splenic_vein_radius_mm: float = 3.5
    splenic_vein_box_margin_mm: float = 6


@dataclass(frozen=True)
class DuctConstants:
    duct_radius_mm: float = 1.3
    dilated_radius_mm: float = 3.2  # the hard negative: dilated along the whole gland
    upstream_radius_mm: float = 3.5  # tail-ward of an obstructing lesion
    duct_t: tuple[float, float] = (0.02, 0.95)
    duct_hu: float = 15.0
    cbd_from_head_mm: tuple = ((-3, 6, 70), (2, 4, 0))  # from the liver hilum down into the head
    cbd_radius_mm: float = 3.0
    cbd_dilated_radius_mm: float = 5.0  # by a head lesion that obstructs
    cbd_hu: float = 10.0


@dataclass(frozen=True)
class LesionConstants:
    locations: tuple[str, ...] = ("head", "body", "tail")
    location_probability: tuple[float, ...] = (0.6, 0.25, 0.15)
    location_t: tuple = ((0.03, 0.22), (0.25, 0.6), (0.6, 0.92))
    centre_sd_mm: float = 2.0  # off the centreline
    upstream_dilation_probability: float = 0.5


@dataclass(frozen=True)
class HardNegativeConstants:
    """Cyst (sharp, water), focal fat (ill-defined, low) in the pancreas; a liver cyst; each with the spec's
    probability (the dilated duct is drawn with the ducts)."""

    t: tuple[float, float] = (0.1, 0.9)  # where along the gland
    cyst_radius_mm: tuple[float, float] = (3, 9)
    cyst_hu: tuple[float, float] = (0, 15)
    fat_semi_axes_mm: tuple[float, float] = (5, 11)
    fat_drop_hu: tuple[float, float] = (35, 70)  # below the parenchyma
    liver_cyst_centre_mm: tuple[float, float, float] = (-70, -5, 60)
    liver_cyst_shift_mm: tuple[float, float] = (-30, 30)  # in x and y
    liver_cyst_radius_mm: tuple[float, float] = (5, 15)


@dataclass(frozen=True)
class FinishConstants:
    partial_volume_sigma_mm: float = 0.7
    filter_truncate: float = 3.0
    hu_range: tuple[int, int] = (-1024, 3071)


BODY, SPINE, BOWEL, VESSELS = BodyConstants(), SpineConstants(), BowelConstants(), VesselConstants()
PANCREAS, DUCTS, LESION = PancreasConstants(), DuctConstants(), LesionConstants()
HARD_NEGATIVES, FINISH = HardNegativeConstants(), FinishConstants()
