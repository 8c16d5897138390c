"""Real label maps in, one tissue map per subject out: each public dataset's class map, licence and quirks.

A label-map folder holds one sub-folder per source, named as in `SOURCES` (the layout of
`../shared/data/labelmaps/` and of the public repositories' label folders). Every map is translated into
`pdac.lab.synth.tissues.Tissue`, checked (known labels, a pancreas, a plausible orientation) and resampled
by nearest neighbour onto an axis-aligned LPS grid (`WORK_SPACING_MM`), which the painter deforms later.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from pdac.errors import InputError
from pdac.lab.synth.tissues import Tissue

log = logging.getLogger(__name__)

WORK_SPACING_MM = 2.5  # the generator's working grid (isotropic); output grids are drawn coarser or equal
MAX_MAP_VOXELS = 600_000_000  # refuse a header that declares more before reading the voxels
MIN_PANCREAS_ML = 5.0

# Class names (lower case, any source) -> tissue, first matching pattern wins.
_NAME_RULES: tuple[tuple[str, Tissue], ...] = (
    (r"lesion|tumou?r|pdac", Tissue.PDAC),
    (r"pancreatic_duct|pancreatic duct", Tissue.DUCT),
    (r"common_bile_duct|bile", Tissue.BILE_DUCT),
    (r"pancrea", Tissue.PANCREAS),
    (r"portal|splenic_vein|veins \(portal|superior_mesenteric_vein", Tissue.PORTAL_VEIN),
    (r"hepatic_vessel", Tissue.HEPATIC_VESSEL),
    (r"vena|postcava|ivc|iliac_vena|brachiocephalic_vein|pulmonary_vein", Tissue.SYSTEMIC_VEIN),
    (r"aorta|arota|arter|celiac|brachiocephalic_trunk", Tissue.ARTERY),
    (r"liver", Tissue.LIVER), (r"spleen", Tissue.SPLEEN), (r"kidney", Tissue.KIDNEY),
    (r"stomach", Tissue.STOMACH), (r"gall", Tissue.GALLBLADDER), (r"esophagus", Tissue.ESOPHAGUS),
    (r"duodenum", Tissue.DUODENUM), (r"colon", Tissue.COLON), (r"rectum", Tissue.RECTUM),
    (r"small_bowel|intestine", Tissue.SMALL_BOWEL), (r"adrenal", Tissue.ADRENAL),
    (r"bladder", Tissue.BLADDER), (r"prostate|uterus", Tissue.PROSTATE_UTERUS),
    (r"lung|trachea", Tissue.LUNG), (r"heart|atrial", Tissue.HEART),
    (r"vertebra|sacrum|rib|hip|femur|humerus|scapula|clavicula|sternum|skull|costal|^[lctsLCTS]\d+$", Tissue.BONE),
    (r"gluteus|autochthon|iliopsoas|muscle", Tissue.MUSCLE),
)


def tissue_of(name: str) -> Tissue:
    for pattern, tissue in _NAME_RULES:
        if re.search(pattern, name.lower()):
            return tissue
    return Tissue.SOFT_TISSUE


@dataclass(frozen=True)
class Source:
    """One public dataset's label maps."""

    name: str  # its folder's name
    classes: dict[int, str] | str  # value -> class name, or the class-map file inside the folder
    licence: str
    citation: str
    pattern: str = "*.nii.gz"
    multi_organ: bool = True  # False: a pancreas-region map only (PANORAMA): a lesion donor, not a subject
    round_values: bool = False  # stored scaled (PanTS): round before use
    extra_bones: Callable[[Path], Path | None] | None = None  # a second map of the same grid with vertebrae

    def class_map(self, folder: Path) -> dict[int, str]:
        if isinstance(self.classes, dict):
            return self.classes
        text = (folder / self.classes).read_text()
        raw = json.loads(text[text.index("{"):])
        return {int(k): v for k, v in raw.items() if k.strip().lstrip("-").isdigit() and int(k) != 0}

    def files(self, folder: Path) -> list[Path]:
        return sorted(p for p in folder.rglob(self.pattern) if p.is_file())


def _atlas_vertebrae(organs: Path) -> Path | None:
    other = organs.with_name(organs.name.replace("_organs_combined_labels", "_vertebrae_SuPreM_pred"))
    return other if other.exists() else None


WORD_CLASSES = {1: "liver", 2: "spleen", 3: "kidney_left", 4: "kidney_right", 5: "stomach", 6: "gallbladder",
                7: "esophagus", 8: "pancreas", 9: "duodenum", 10: "colon", 11: "intestine", 12: "adrenal",
                13: "rectum", 14: "bladder", 15: "head_of_femur_left", 16: "head_of_femur_right"}
AMOS_CLASSES = {1: "spleen", 2: "right kidney", 3: "left kidney", 4: "gall bladder", 5: "esophagus", 6: "liver",
                7: "stomach", 8: "aorta", 9: "postcava (IVC)", 10: "pancreas", 11: "right adrenal gland",
                12: "left adrenal gland", 13: "duodenum", 14: "bladder", 15: "prostate/uterus"}
PANORAMA_CLASSES = {1: "PDAC lesion", 2: "veins (portal/splenic/SMV)", 3: "arteries", 4: "pancreas",
                    5: "pancreatic duct", 6: "common bile duct"}

SOURCES: dict[str, Source] = {s.name: s for s in (
    Source("word", WORD_CLASSES, "GPL-3.0; the dataset's README adds academic, non-commercial use",
           "Luo et al., WORD, Medical Image Analysis 82:102642 (2022)"),
    Source("totalsegmentator_dataset", "classmap_totalsegmentator_v2_total.json.txt", "CC BY 4.0",
           "Wasserthal et al., TotalSegmentator, Radiology: AI (2023)", pattern="*_total117.nii.gz"),
    Source("amos", AMOS_CLASSES, "CC BY 4.0", "Ji et al., AMOS, NeurIPS (2022)"),
    Source("pants", "PanTS_class_map.json", "CC BY-NC-SA 4.0", "Li et al., PanTS, NeurIPS D&B (2025)",
           pattern="*_combined_labels.nii.gz", round_values=True),
    Source("abdomenatlas", "AbdomenAtlas1.1_organs_class_map.json",
           "CC BY-NC-SA 4.0 (organs); vertebrae from a CC BY-NC-ND 4.0 model", "Li et al., AbdomenAtlas, MedIA (2024)",
           pattern="*_organs_combined_labels.nii.gz", extra_bones=_atlas_vertebrae),
    Source("panorama", PANORAMA_CLASSES, "CC BY-NC 4.0",
           "Alves et al., The PANORAMA Study Protocol, Zenodo 10.5281/zenodo.10599559", multi_organ=False),
)}


@dataclass
class Subject:
    """One patient's tissue map on the working grid (z, y, x), axis-aligned LPS."""

    source: str
    name: str  # file name without extension
    tissues: np.ndarray  # uint8 Tissue values
    origin: np.ndarray  # LPS mm of voxel (0, 0, 0), (x, y, z)
    spacing: float = WORK_SPACING_MM

    @property
    def key(self) -> str:
        return f"{self.source}/{self.name}"

    def centroid_mm(self, tissue: Tissue) -> np.ndarray | None:
        idx = np.argwhere(self.tissues == tissue)
        if idx.size == 0:
            return None
        return self.origin + idx.mean(axis=0)[::-1] * self.spacing


def _stem(path: Path) -> str:
    return path.name.removesuffix(".gz").removesuffix(".nii").removesuffix(".mha").removesuffix(".nrrd")


def _read_header_checked(path: Path) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise InputError(f"{path}: not a readable label map ({str(e).strip().splitlines()[-1][:120]})") from None
    size = reader.GetSize()
    if len(size) != 3:
        raise InputError(f"{path}: expected a 3D label map, got {len(size)}D")
    if int(np.prod(size, dtype=np.int64)) > MAX_MAP_VOXELS:
        raise InputError(f"{path}: {'x'.join(map(str, size))} voxels exceeds the limit of {MAX_MAP_VOXELS:,}")
    spacing, direction = np.asarray(reader.GetSpacing()), np.asarray(reader.GetDirection()).reshape(3, 3)
    if not (np.all(np.isfinite(spacing)) and spacing.min() > 0.05 and spacing.max() < 20):
        raise InputError(f"{path}: implausible voxel spacing {tuple(float(v) for v in np.round(spacing, 4))} mm")
    if not np.all(np.isfinite(reader.GetOrigin())) or abs(np.linalg.det(direction)) < 0.9:
        raise InputError(f"{path}: invalid origin or direction in the header")
    return reader


def _to_tissues(values: np.ndarray, classes: dict[int, str], path: Path) -> np.ndarray:
    present = np.unique(values)
    unknown = sorted(int(v) for v in present if v != 0 and int(v) not in classes)
    if unknown:
        raise InputError(f"{path}: label value(s) {unknown[:8]} are not in the source's class map; "
                         "is this file in the right source folder?")
    lut = np.zeros(max(int(present.max()), max(classes)) + 1, dtype=np.uint8)
    for value, name in classes.items():
        lut[value] = tissue_of(name)
    return lut[values]


def _axis_aligned(image: sitk.Image, spacing: float) -> sitk.Image:
    """Nearest-neighbour resampling onto an identity-direction grid covering the image's physical box."""
    size = np.asarray(image.GetSize())
    corners = np.array([[i, j, k] for i in (0, size[0] - 1) for j in (0, size[1] - 1) for k in (0, size[2] - 1)])
    points = np.array([image.TransformContinuousIndexToPhysicalPoint(c.astype(float).tolist()) for c in corners])
    lo, hi = points.min(axis=0), points.max(axis=0)
    new_size = [int(np.ceil((h - lo_) / spacing)) + 1 for lo_, h in zip(lo, hi, strict=True)]
    return sitk.Resample(image, new_size, sitk.Transform(), sitk.sitkNearestNeighbor, lo.tolist(), [spacing] * 3,
                         np.eye(3).ravel().tolist(), 0, sitk.sitkUInt8)


def check_orientation(subject: Subject, path: Path) -> None:
    """Refuse maps whose anatomy contradicts their header (LPS: the liver on the patient's right, x < spleen's
    x; the liver above the bladder), e.g. a flipped axis written without its direction."""
    liver, spleen = subject.centroid_mm(Tissue.LIVER), subject.centroid_mm(Tissue.SPLEEN)
    if liver is not None and spleen is not None and liver[0] > spleen[0]:
        raise InputError(f"{path}: the liver lies on the patient's left of the spleen in this file's physical "
                         "space: wrong orientation in the header (left-right flipped?)")
    bladder = subject.centroid_mm(Tissue.BLADDER)
    if liver is not None and bladder is not None and liver[2] < bladder[2]:
        raise InputError(f"{path}: the liver lies below the bladder in this file's physical space: wrong "
                         "orientation in the header (head-feet flipped?)")


def load_subject(path: Path, source: Source, folder: Path, spacing: float = WORK_SPACING_MM) -> Subject:
    """One label map -> a checked Subject on the working grid; InputError with one line when it is unusable."""
    _read_header_checked(path)
    image = sitk.ReadImage(str(path))
    values = sitk.GetArrayFromImage(image)
    if source.round_values or values.dtype.kind == "f":
        if not np.all(np.isfinite(values)):
            raise InputError(f"{path}: non-finite label values")
        values = np.rint(values)
    values = values.astype(np.int64)
    if values.min() < 0:
        raise InputError(f"{path}: negative label values")
    tissues = _to_tissues(values, source.class_map(folder), path)
    bones = source.extra_bones(path) if source.extra_bones else None
    if bones is not None:
        extra = sitk.GetArrayFromImage(sitk.ReadImage(str(bones)))
        if extra.shape == tissues.shape:
            tissues[(tissues == 0) & (np.rint(extra) > 0)] = Tissue.BONE
    pancreas_ml = float(np.isin(tissues, (Tissue.PANCREAS, Tissue.PDAC, Tissue.DUCT)).sum()) \
        * float(np.prod(image.GetSpacing())) / 1000
    if pancreas_ml < MIN_PANCREAS_ML:
        raise InputError(f"{path}: no pancreas in this label map ({pancreas_ml:.1f} mL labelled; at least "
                         f"{MIN_PANCREAS_ML:g} needed)")
    tissue_image = sitk.GetImageFromArray(tissues)
    tissue_image.CopyInformation(image)
    aligned = _axis_aligned(tissue_image, spacing)
    subject = Subject(source.name, _stem(path), sitk.GetArrayFromImage(aligned),
                      np.asarray(aligned.GetOrigin(), dtype=np.float64), spacing)
    check_orientation(subject, path)
    return subject


def find_maps(root: Path, sources: list[str] | None = None) -> list[tuple[Path, Source, Path]]:
    """(file, source, source folder) for every map under `root`'s known source folders."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: label-map folder not found")
    found = []
    for name, source in SOURCES.items():
        if sources is not None and name not in sources:
            continue
        folder = root / name
        if folder.is_dir():
            found += [(p, source, folder) for p in source.files(folder)]
    if not found:
        raise InputError(f"{root}: no label maps found (expected sub-folders named {', '.join(SOURCES)})")
    return found
