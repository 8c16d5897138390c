"""The generator's tissue vocabulary, each tissue's PANORAMA label and its attenuation per contrast phase.

Every source's class map is translated into these tissues (`pdac.lab.synth.sources`); the painter draws one
mean HU per tissue per volume from the range of the volume's phase, then SynthSeg-style spreads it.

Where the ranges come from (typical adult values; HU at 100-120 kVp):
- venous (portal-venous, ~70 s): PANORAMA's own fingerprint of the labelled region (mean 110, median 105 HU,
  `../shared/reference/panorama-baseline`); the contrast-enhanced real series we measure on (TotalSegmentator
  masks: aorta 177, portal vein 131, liver 89, pancreas 61 HU, `tests/data/real-ct/README.md`); enhancement
  curves and timing in Bae, Radiology 2010;256:32-61.
- pancreatic/late-arterial phase: Bae 2010 (aorta 250-400 HU, pancreas peak enhancement); PDAC conspicuity
  greatest in that phase (Prokesch et al., Radiology 2002;224:764-768: most PDAC are hypoattenuating to the
  parenchyma, about one in ten isoattenuating).
- non-contrast: the non-contrast real scan (aorta 42, portal vein 35, liver 45, pancreas -6 HU: a fatty
  gland) and textbook unenhanced values (liver 50-65, spleen 40-50, muscle 40-60, fat -120 to -80, fluid
  0-20 HU).
- delayed (~3-5 min): washout towards unenhanced values, urine contrast in the bladder.

Caveat, recorded in docs/synthetic-data.md: the first draft of these ranges also looked at the HU that
TotalSegmentator's masks give on the two bundled real scans (the non-contrast pancreas range reaches down to a
fatty gland's values). Those scans are the real-scan benchmark (`pdac real-scan`), so that benchmark is not blind
to intensities; anatomy, positions and shapes never saw those scans or their masks.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import IntEnum

from pdac.labels import Label


class Tissue(IntEnum):
    NONE = 0  # unlabelled: background tissue inside the body, air outside
    LIVER = 1
    SPLEEN = 2
    KIDNEY = 3
    STOMACH = 4
    GALLBLADDER = 5
    ESOPHAGUS = 6
    PANCREAS = 7
    DUODENUM = 8
    COLON = 9
    SMALL_BOWEL = 10
    ADRENAL = 11
    RECTUM = 12
    BLADDER = 13
    BONE = 14
    ARTERY = 15  # aorta and its branches (PANORAMA "arteries")
    PORTAL_VEIN = 16  # portal, splenic and superior mesenteric veins (PANORAMA "veins")
    SYSTEMIC_VEIN = 17  # IVC, iliac and renal veins (not labelled in PANORAMA)
    DUCT = 18  # pancreatic duct
    BILE_DUCT = 19  # common bile duct
    PDAC = 20
    LUNG = 21
    MUSCLE = 22
    PROSTATE_UTERUS = 23
    HEPATIC_VESSEL = 24
    HEART = 25
    SOFT_TISSUE = 26  # thyroid, spinal cord, other small organs
    SUBCUTANEOUS_FAT = 27  # made by the generator: the body outline
    WALL_MUSCLE = 28
    VISCERAL_FAT = 29
    CYST = 30  # hard negatives, made by the generator
    FOCAL_FAT = 31
    AIR = 32  # outside the body; gas in the bowel
    MARROW = 33  # a vertebral body added where a map has no bones


# The PANORAMA label (0-6) each tissue becomes in the generated label map; the rest is background.
PANORAMA_LABEL: dict[Tissue, Label] = {
    Tissue.PDAC: Label.PDAC, Tissue.PORTAL_VEIN: Label.VEINS, Tissue.ARTERY: Label.ARTERIES,
    Tissue.PANCREAS: Label.PANCREAS, Tissue.CYST: Label.PANCREAS, Tissue.FOCAL_FAT: Label.PANCREAS,
    Tissue.DUCT: Label.PANCREATIC_DUCT, Tissue.BILE_DUCT: Label.COMMON_BILE_DUCT,
}

PHASES = ("venous", "pancreatic", "non-contrast", "delayed")

# Mean HU per tissue: (low, high) per phase, in the order of PHASES. Tissues missing here use SOFT_TISSUE's.
HU: dict[Tissue, tuple[tuple[float, float], ...]] = {
    #                      venous        pancreatic    non-contrast  delayed
    Tissue.LIVER:         ((95, 135),   (75, 100),    (40, 65),     (70, 95)),
    Tissue.SPLEEN:        ((100, 135),  (110, 150),   (38, 52),     (75, 100)),
    Tissue.KIDNEY:        ((140, 200),  (150, 220),   (28, 40),     (110, 160)),
    Tissue.STOMACH:       ((40, 90),    (50, 100),    (25, 45),     (40, 70)),  # wall; the content is drawn apart
    Tissue.GALLBLADDER:   ((0, 25),     (0, 25),      (0, 25),      (0, 25)),
    Tissue.ESOPHAGUS:     ((40, 70),    (40, 70),     (30, 50),     (40, 60)),
    Tissue.PANCREAS:      ((85, 130),   (100, 150),   (-10, 50),    (65, 95)),
    Tissue.DUODENUM:      ((50, 100),   (50, 110),    (25, 45),     (45, 80)),
    Tissue.COLON:         ((40, 90),    (40, 90),     (25, 45),     (40, 70)),
    Tissue.SMALL_BOWEL:   ((60, 110),   (60, 120),    (25, 45),     (50, 80)),
    Tissue.ADRENAL:       ((50, 80),    (50, 90),     (20, 40),     (40, 60)),
    Tissue.RECTUM:        ((30, 70),    (30, 70),     (25, 45),     (30, 60)),
    Tissue.BLADDER:       ((0, 20),     (0, 20),      (0, 20),      (60, 300)),
    Tissue.BONE:          ((250, 500),  (250, 500),   (250, 500),   (250, 500)),
    Tissue.ARTERY:        ((130, 200),  (250, 400),   (35, 50),     (90, 130)),
    Tissue.PORTAL_VEIN:   ((140, 200),  (90, 140),    (35, 50),     (90, 130)),
    Tissue.SYSTEMIC_VEIN: ((110, 170),  (70, 120),    (35, 50),     (90, 130)),
    Tissue.DUCT:          ((0, 25),     (0, 25),      (0, 25),      (0, 25)),
    Tissue.BILE_DUCT:     ((0, 25),     (0, 25),      (0, 25),      (0, 25)),
    Tissue.LUNG:          ((-900, -750), (-900, -750), (-900, -750), (-900, -750)),
    Tissue.MUSCLE:        ((45, 70),    (45, 70),     (40, 60),     (45, 65)),
    Tissue.PROSTATE_UTERUS: ((50, 100), (50, 100),    (30, 50),     (50, 90)),
    Tissue.HEPATIC_VESSEL: ((140, 200), (80, 130),    (35, 50),     (90, 130)),
    Tissue.HEART:         ((130, 200),  (200, 350),   (35, 50),     (90, 130)),
    Tissue.SOFT_TISSUE:   ((30, 60),    (30, 60),     (20, 45),     (30, 60)),
    Tissue.SUBCUTANEOUS_FAT: ((-120, -85), (-120, -85), (-120, -85), (-120, -85)),
    Tissue.WALL_MUSCLE:   ((40, 65),    (40, 65),     (40, 60),     (40, 65)),
    Tissue.VISCERAL_FAT:  ((-110, -60), (-110, -60),  (-110, -60),  (-110, -60)),
    Tissue.CYST:          ((0, 25),     (0, 25),      (0, 25),      (0, 25)),
    Tissue.AIR:           ((-1000, -950), (-1000, -950), (-1000, -950), (-1000, -950)),
    Tissue.MARROW:        ((150, 280),  (150, 280),   (150, 280),   (150, 280)),
}

# PDAC is drawn relative to the parenchyma: hypoattenuating by (low, high) HU per phase (Prokesch 2002:
# largest difference in the pancreatic phase, small without contrast).
PDAC_CONTRAST_HU: tuple[tuple[float, float], ...] = ((20, 60), (30, 80), (0, 12), (10, 35))
# Focal fat in the gland: this much below the parenchyma (the phantoms' hard negative, anatomy.HARD_NEGATIVES).


@dataclass(frozen=True)
class IntensitySettings:
    """How the painter spreads the attenuation (SynthSeg-style randomisation)."""

    phase_probability: tuple[float, ...] = (0.6, 0.15, 0.15, 0.1)  # of PHASES
    pdac_contrast_hu: tuple[tuple[float, float], ...] = PDAC_CONTRAST_HU  # per phase, below the parenchyma
    random_contrast_probability: float = 0.05  # any tissue any mean in random_hu (SynthSeg's extreme)
    random_hu: tuple[float, float] = (-100.0, 250.0)
    texture_sd_hu: tuple[float, float] = (4.0, 14.0)  # smooth within-tissue variation
    texture_scale_mm: float = 12.0
    noise_hu: tuple[float, float] = (6.0, 22.0)  # quantum noise after resampling
    bias_hu: tuple[float, float] = (0.0, 25.0)  # amplitude of a very smooth additive field
    partial_volume_sigma_mm: tuple[float, float] = (0.5, 1.2)
    # Small-bowel loops (`paint.bowel_loops`): blobs of a smooth field this coarse (loops are 20-30 mm across),
    # thresholded (unit SD): inside a small-bowel label most of it is loops, in the other fat fewer.
    loop_scale_mm: float = 12.0
    loop_threshold_in_label: tuple[float, float] = (-0.6, 0.0)
    loop_threshold_in_fat: tuple[float, float] = (0.2, 1.2)


def only_phases(ints: IntensitySettings, phases: tuple[str, ...]) -> IntensitySettings:
    """The same settings drawing only these phases, in their default proportions (e.g. contrast-enhanced only
    for a lesion model: a PDAC drawn 0-12 HU below the parenchyma without contrast is a label nobody can see)."""
    unknown = sorted(set(phases) - set(PHASES))
    if unknown or not phases:
        raise ValueError(f"unknown phase(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(PHASES)}")
    kept = [p if name in phases else 0.0 for name, p in zip(PHASES, ints.phase_probability, strict=True)]
    return replace(ints, phase_probability=tuple(p / sum(kept) for p in kept))


def hu_range(tissue: Tissue, phase: int) -> tuple[float, float]:
    return HU.get(tissue, HU[Tissue.SOFT_TISSUE])[phase]
