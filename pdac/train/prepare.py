"""PANORAMA-style scans + labels -> the two nnU-Net raw datasets (stage 1 pancreas, stage 2 lesions).

Stage 1: the scan resampled to 4.5 x 4.5 x 9 mm, labels reduced to binary pancreas ({1, 4, 5}).
Stage 2: the scan and all 7 labels cropped around the pancreas (physical-space box plus margins),
at the original resolution. Both use the same geometry code as inference.
"""

from __future__ import annotations

import logging
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from pdac.config import PipelineConfig
from pdac.errors import InputError, UsageError
from pdac.infer.geometry import crop, crop_region_around_mask, resample_to_spacing, same_geometry
from pdac.infer.io import case_id, find_images, read_image
from pdac.labels import dataset_json_labels
from pdac.safe_read import walk

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrepareSettings:
    stage1_dir: Path
    stage2_dir: Path
    spacing_mm: tuple[float, float, float]
    margins_mm: tuple[float, float, float]
    pancreas_labels: tuple[int, ...]
    file_ending: str = ".nii.gz"


def dataset_name(dataset_id: int, name: str) -> str:
    return f"Dataset{dataset_id:03d}_{name}"


def _prepare_case(job) -> tuple[str, str | None]:
    """Returns (case, None) on success or (case, reason) when skipped."""
    image_path, label_path, s = job
    case = case_id(image_path)
    try:
        image = read_image(image_path, dtype=None)
        label = read_image(label_path, dtype=sitk.sitkUInt8)
    except InputError as e:
        return case, str(e)
    if not same_geometry(image, label):
        return case, (f"image/label geometry differs (size {image.GetSize()} vs {label.GetSize()}, "
                      f"spacing {np.round(image.GetSpacing(), 3)} vs {np.round(label.GetSpacing(), 3)})")
    label.CopyInformation(image)  # tolerated float noise: make them identical
    label_arr = sitk.GetArrayFromImage(label)
    if label_arr.max() > 6:
        return case, f"label values outside 0-6 (max {int(label_arr.max())})"
    pancreas = np.isin(label_arr, s.pancreas_labels)
    region = crop_region_around_mask(pancreas, label, image, s.margins_mm)
    if region is None:
        return case, "no pancreas in the label"

    ext = s.file_ending
    # Stage 1: low-resolution scan, binary pancreas (linear-interpolated fraction >= 0.5).
    low = resample_to_spacing(sitk.Cast(image, sitk.sitkFloat32), s.spacing_mm, default_value=-1024.0)
    pancreas_img = sitk.GetImageFromArray(pancreas.astype(np.float32))
    pancreas_img.CopyInformation(image)
    low_mask = resample_to_spacing(pancreas_img, s.spacing_mm) >= 0.5
    low_mask = sitk.Cast(low_mask, sitk.sitkUInt8)
    sitk.WriteImage(low, str(s.stage1_dir / "imagesTr" / f"{case}_0000{ext}"), useCompression=True)
    sitk.WriteImage(low_mask, str(s.stage1_dir / "labelsTr" / f"{case}{ext}"), useCompression=True)
    # Stage 2: original resolution, all labels, crop around the pancreas.
    sitk.WriteImage(crop(image, region), str(s.stage2_dir / "imagesTr" / f"{case}_0000{ext}"), useCompression=True)
    sitk.WriteImage(crop(label, region), str(s.stage2_dir / "labelsTr" / f"{case}{ext}"), useCompression=True)
    return case, None


def find_images_below(root: Path) -> list[Path]:
    """Image files in `root` and its sub-folders (PANORAMA's scans arrive in several batch folders; hidden
    folders skipped, depth bounded); two files giving one case id are refused."""
    if not root.is_dir():
        return find_images([root])
    found: list[Path] = []
    for folder, subfolders, _ in walk(root):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        found.extend(find_images([Path(folder)]))
    seen: dict[str, Path] = {}
    for p in found:
        if case_id(p) in seen:
            raise UsageError(f"case {case_id(p)} appears twice: {seen[case_id(p)]} and {p}; keep one")
        seen[case_id(p)] = p
    return sorted(found, key=case_id)


def pair_images_and_labels(images: Path, labels: Path) -> list[tuple[Path, Path]]:
    image_files = find_images_below(images)
    label_files = {case_id(p, strip_channel=False): p for p in find_images([labels])}
    pairs, missing = [], []
    for p in image_files:
        cid = case_id(p)
        (pairs.append((p, label_files[cid])) if cid in label_files else missing.append(cid))
    if missing:
        log.warning("%d scans have no label and are skipped: %s", len(missing), ", ".join(missing[:10]))
    if not pairs:
        raise UsageError(f"no scan in {images} has a matching label in {labels}")
    return pairs


def _remove_stale_cases(dataset: Path, kept: set[str], file_ending: str) -> None:
    """Delete cases left in an existing output dataset by an earlier run, so that the dataset (and its
    numTraining) holds exactly this run's cases."""
    stale = [p for sub, suffix in (("imagesTr", f"_0000{file_ending}"), ("labelsTr", file_ending))
             for p in (dataset / sub).glob(f"*{file_ending}") if p.name[: -len(suffix)] not in kept]
    for p in stale:
        p.unlink()
    if stale:
        log.warning("%s: removed %d file(s) of cases not in this run", dataset.name, len(stale))


def prepare(images: Path, labels: Path, out: Path, config: PipelineConfig, stage1_id: int = 113,
            stage2_id: int = 114, workers: int = 1, file_ending: str = ".nii.gz", verify: bool = True) -> dict:
    """Write both raw datasets under `out` (an nnUNet_raw folder). Returns a summary dict."""
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    pairs = pair_images_and_labels(Path(images), Path(labels))
    s1 = Path(out) / dataset_name(stage1_id, "PANORAMA_Pancreas_Segmentation")
    s2 = Path(out) / dataset_name(stage2_id, "PANORAMA_PDAC_Detection")
    for d in (s1, s2):
        for sub in ("imagesTr", "labelsTr"):
            (d / sub).mkdir(parents=True, exist_ok=True)
    settings = PrepareSettings(s1, s2, config.stage1.spacing_mm, config.crop.margins_mm,
                               config.stage1.pancreas_labels, file_ending)
    jobs = [(img, lab, settings) for img, lab in pairs]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = list(tqdm(pool.map(_prepare_case, jobs), total=len(jobs), desc="prepare", unit="case"))
    else:
        results = [_prepare_case(j) for j in tqdm(jobs, desc="prepare", unit="case")]
    skipped = {case: reason for case, reason in results if reason}
    for case, reason in skipped.items():
        log.warning("skipped %s: %s", case, reason)
    n_ok = len(results) - len(skipped)
    if n_ok == 0:
        raise InputError("no usable case (all skipped)")
    kept = {case for case, reason in results if not reason}
    for d in (s1, s2):
        _remove_stale_cases(d, kept, file_ending)
    generate_dataset_json(str(s1), {0: "CT"}, {"background": 0, "pancreas": 1}, n_ok, file_ending,
                          dataset_name=s1.name, description="PANORAMA stage 1: pancreas at 4.5 x 4.5 x 9 mm")
    generate_dataset_json(str(s2), {0: "CT"}, dataset_json_labels(), n_ok, file_ending, dataset_name=s2.name,
                          description="PANORAMA stage 2: all labels, cropped around the pancreas")
    if verify:
        from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

        for d in (s1, s2):
            verify_dataset_integrity(str(d), num_processes=max(1, workers))
    log.info("prepared %d cases (%d skipped): %s, %s", n_ok, len(skipped), s1, s2)
    return {"prepared": n_ok, "skipped": skipped, "stage1": str(s1), "stage2": str(s2)}
