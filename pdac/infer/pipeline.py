"""The two-stage PDAC detection pipeline: scan -> pancreas -> crop -> lesion model -> detection map.

Models are loaded once (`Pipeline(...)`) and reused for every case (`pipeline.run(scan)`); nothing
is written to disk and no subprocess is started.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
import torch

from pdac.config import LimitsConfig, ModelConfig, PipelineConfig
from pdac.errors import InputError, UsageError
from pdac.infer.candidates import Lesion, candidates, lesion_list
from pdac.infer.geometry import (
    Region,
    centred_region,
    check_geometry,
    copy_geometry,
    crop,
    crop_region_around_mask,
    paste,
    resampled_size,
)
from pdac.infer.io import MAX_VOXELS
from pdac.infer.lesion import lesion_probability, mask_probability
from pdac.infer.models import Model, load_model, resolve_device, resolve_precision, stage1_precision
from pdac.infer.pancreas import segment_pancreas
from pdac.infer.plausibility import assess_pancreas
from pdac.infer.provenance import weights_provenance
from pdac.infer.weights import ModelFiles, find_weights_dir, verify_weights

log = logging.getLogger(__name__)

AIR_HU = -1024.0


@dataclass
class CaseResult:
    detection_map: sitk.Image  # float32, exactly the scan's grid
    likelihood: float
    lesions: list[Lesion]
    pancreas_found: bool
    crop: Region
    seconds: dict[str, float] = field(default_factory=dict)
    pancreas: dict = field(default_factory=dict)  # stage-1 plausibility (plausibility.PancreasCheck.record())
    pancreas_mask: sitk.Image | None = None  # stage 1's mask (uint8, on its low-resolution grid), as found


def sanitize(scan: sitk.Image, name: str = "scan") -> sitk.Image:
    """Float32 scan with non-finite voxels set to air; refuses scans that carry no usable signal."""
    size = scan.GetSize()
    if len(size) != 3:
        raise InputError(f"{name}: expected a 3D image, got {len(size)}D")
    if int(np.prod(size, dtype=np.int64)) > MAX_VOXELS:
        raise InputError(f"{name}: {size[0]}x{size[1]}x{size[2]} voxels exceeds the limit of {MAX_VOXELS:,}")
    if min(size) < 2:
        raise InputError(f"{name}: image too small ({size[0]}x{size[1]}x{size[2]} voxels)")
    check_geometry(scan, name, InputError)  # every source (files, DICOM, process.py) passes here
    spacing = np.asarray(scan.GetSpacing())
    if spacing.min() < 0.05 or spacing.max() > 50:
        raise InputError(f"{name}: implausible voxel spacing {tuple(np.round(spacing, 4))} mm")
    scan = sitk.Cast(scan, sitk.sitkFloat32) if scan.GetPixelID() != sitk.sitkFloat32 else scan
    arr = sitk.GetArrayViewFromImage(scan)
    finite = np.isfinite(arr)
    if not finite.all():
        if not finite.any():
            raise InputError(f"{name}: no finite voxel values (all NaN/Inf)")
        log.warning("%s: %d non-finite voxels set to %g HU", name, int((~finite).sum()), AIR_HU)
        fixed = np.where(finite, arr, np.float32(AIR_HU)).astype(np.float32)
        scan = copy_geometry(fixed, scan)
    return scan


def _resampled_voxels(extent_mm: np.ndarray, spacing_mm) -> int:
    """Voxels of a grid covering `extent_mm` (x, y, z) at `spacing_mm`, rounded as nnU-Net rounds."""
    return int(np.prod(np.maximum(1, np.round(extent_mm / np.asarray(spacing_mm, dtype=np.float64))),
                       dtype=np.float64))


def check_stage1_work(scan: sitk.Image, stage1_spacing_mm, pancreas_model: Model, limits: LimitsConfig,
                      name: str = "scan") -> None:
    """Refuse (InputError) a scan whose physical extent or stage-1 grids exceed the limits, before any
    resampling allocates them: small files can describe enormous volumes (2 MB at 40 mm spacing)."""
    extent = np.asarray(scan.GetSize(), dtype=np.float64) * np.asarray(scan.GetSpacing())
    if extent.max() > limits.max_extent_mm:
        raise InputError(f"{name}: physical extent {'x'.join(f'{v:.0f}' for v in extent)} mm exceeds the limit "
                         f"of {limits.max_extent_mm:g} mm per axis (limits.max_extent_mm)")
    low_extent = np.asarray(resampled_size(scan, stage1_spacing_mm), dtype=np.float64) * np.asarray(stage1_spacing_mm)
    voxels = max(_resampled_voxels(extent, stage1_spacing_mm),
                 _resampled_voxels(low_extent, pancreas_model.spacing_xyz))
    if voxels > limits.max_stage1_voxels:
        raise InputError(f"{name}: {voxels:,} voxels after resampling for stage 1 exceeds the limit of "
                         f"{limits.max_stage1_voxels:,} (limits.max_stage1_voxels)")


def check_stage2_work(scan: sitk.Image, region: Region, lesion_model: Model, limits: LimitsConfig,
                      name: str = "scan") -> int:
    """Refuse (InputError) a crop whose grid at the lesion model's spacing exceeds the limit, before cropping;
    else return that grid's voxel count."""
    extent = np.asarray(region.size, dtype=np.float64) * np.asarray(scan.GetSpacing())
    voxels = _resampled_voxels(extent, lesion_model.spacing_xyz)
    if voxels > limits.max_stage2_voxels:
        raise InputError(f"{name}: {voxels:,} voxels after cropping and resampling for stage 2 exceeds the limit "
                         f"of {limits.max_stage2_voxels:,} (limits.max_stage2_voxels)")
    return voxels


class Pipeline:
    def __init__(self, config: PipelineConfig, weights: str | None = None):
        self.config = config
        self.device = resolve_device(config.runtime.device)  # a usage error, before the weights are read
        self.weights_dir, why = find_weights_dir(weights)
        log.info("using weights %s (%s)", self.weights_dir, why)
        needed = [f"{m}/{f}" for m in (config.stage1.model, config.stage2.model)
                  for f in ("dataset.json", "plans.json")]
        # Every byte the models are built from comes from `verified`: checked before any checkpoint is
        # unpickled, and hashed again as it is read (pdac.infer.weights).
        verified = verify_weights(self.weights_dir, needed)
        self.provenance = weights_provenance(self.weights_dir, config)  # model card, manifest hash, config
        if config.runtime.threads > 0:
            torch.set_num_threads(config.runtime.threads)
        log.info("device: %s", torch.cuda.get_device_name(self.device) + " (cuda)" if self.device.type == "cuda"
                 else f"cpu ({torch.get_num_threads()} threads)")
        self.precision = resolve_precision(config.runtime.precision, self.device)
        self.pancreas_model = load_model(verified.model(config.stage1.model), config.stage1, self.device)
        self.pancreas_model.precision = stage1_precision(self.precision)
        self.use_lesion_model(verified.model(config.stage2.model), config.stage2)

    def use_lesion_model(self, files: ModelFiles, cfg: ModelConfig) -> None:
        """Load the stage-2 model from `files` in the pipeline's precision (also how the study swaps in a
        training snapshot)."""
        self.lesion_model = load_model(files, cfg, self.device)
        self.lesion_model.precision = self.precision
        outputs = self.lesion_model.num_outputs
        if getattr(cfg, "lesion_channel", 1) >= outputs:
            raise UsageError(f"config stage2.lesion_channel = {cfg.lesion_channel}: the lesion model "
                             f"{files.folder.name!r} has outputs 0..{outputs - 1} (0 is background)")

    def run(self, scan: sitk.Image, name: str = "scan") -> CaseResult:
        cfg = self.config
        seconds: dict[str, float] = {}
        t = time.perf_counter()

        def lap(key: str) -> None:
            nonlocal t
            now = time.perf_counter()
            seconds[key] = round(now - t, 3)
            t = now

        scan = sanitize(scan, name)
        check_stage1_work(scan, cfg.stage1.spacing_mm, self.pancreas_model, cfg.limits, name)
        low_grid, pancreas_mask = segment_pancreas(self.pancreas_model, scan, cfg.stage1.spacing_mm)
        stage1_mask = copy_geometry(pancreas_mask.astype(np.uint8), low_grid)  # for viewers, before any fallback
        lap("stage1")
        pancreas = assess_pancreas(scan, low_grid, pancreas_mask, cfg.plausibility, name)
        if pancreas.found and not pancreas.plausible and cfg.plausibility.action == "fallback":
            pancreas_mask = np.zeros_like(pancreas_mask)
        lap("plausibility")
        # The crop is bounded by what a pancreas can occupy; a mask judged implausible (e.g. an undertrained
        # stage 1 labelling most of the body; the mask is one component already) gets no more than a typical
        # region of interest around its centre, so such a case costs what a typical case costs.
        implausible = pancreas.found and not pancreas.plausible
        region = crop_region_around_mask(pancreas_mask, low_grid, scan, cfg.crop.margins_mm,
                                         cfg.crop.fallback_extent_mm if implausible else cfg.crop.max_extent_mm)
        pancreas_found = region is not None
        log.info("%s: stage 1 done in %.1f s, pancreas %s", name, seconds["stage1"],
                 "found" if pancreas_found else "not found")
        if not pancreas_found:
            log.warning("%s: no pancreas found; falling back to a %s mm box around the scan centre",
                        name, "x".join(f"{v:g}" for v in cfg.crop.fallback_extent_mm))
            region = centred_region(scan, cfg.crop.fallback_extent_mm)
        voxels = check_stage2_work(scan, region, self.lesion_model, cfg.limits, name)
        extent = np.asarray(region.size) * np.asarray(scan.GetSpacing())
        log.info("%s: stage 2 on a %s mm crop (%s voxels at the lesion model's spacing)", name,
                 "x".join(f"{v:.0f}" for v in extent), f"{voxels:,}")
        roi = crop(scan, region)
        probability = lesion_probability(self.lesion_model, roi, cfg.stage2.lesion_channel)
        lap("stage2")
        mask_probability(probability, roi, low_grid, pancreas_mask if pancreas_found else None, cfg.detection)
        detection_roi, _ = candidates(probability, cfg.detection)
        lesions = lesion_list(detection_roi, roi, offset_xyz=region.start)
        detection = paste(detection_roi, region, scan.GetSize()[::-1])
        likelihood = float(np.clip(detection_roi.max(initial=0.0), 0.0, 1.0))
        detection_map = copy_geometry(detection, scan)
        lap("postprocess")
        return CaseResult(detection_map, likelihood, lesions, pancreas_found, region, seconds, pancreas.record(),
                          stage1_mask)
