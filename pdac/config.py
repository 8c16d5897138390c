"""Typed pipeline configuration, loaded from `resources/pipeline.toml` with command-line overrides."""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pdac.errors import UsageError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "resources" / "pipeline.toml"

Vec3 = tuple[float, float, float]


@dataclass(frozen=True)
class ModelConfig:
    model: str
    folds: tuple[int, ...] = ()
    checkpoints: tuple[str, ...] = ("checkpoint_final.pth",)
    tile_step_size: float = 0.5
    tta: bool | str = False  # mirroring; "auto": on with CUDA, off on the CPU

    def mirroring_on(self, device_type: str) -> bool:
        return self.tta if isinstance(self.tta, bool) else device_type == "cuda"


@dataclass(frozen=True)
class Stage1Config(ModelConfig):
    model: str = "pancreas"
    spacing_mm: Vec3 = (4.5, 4.5, 9.0)
    pancreas_labels: tuple[int, ...] = (1, 4, 5)


@dataclass(frozen=True)
class CropConfig:
    margins_mm: Vec3 = (100.0, 50.0, 15.0)
    fallback_extent_mm: Vec3 = (320.0, 175.0, 100.0)


@dataclass(frozen=True)
class Stage2Config(ModelConfig):
    model: str = "lesion"
    checkpoints: tuple[str, ...] = ("checkpoint_best_panorama.pth", "checkpoint_final.pth")
    tta: bool | str = "auto"
    lesion_channel: int = 1


@dataclass(frozen=True)
class DetectionConfig:
    mask_to_pancreas: bool = True
    pancreas_dilation_mm: float = 15.0
    min_tissue_hu: float = -500.0
    dynamic_threshold_factor: float = 2.5
    min_voxels_detection: int = 10
    num_lesions_to_extract: int = 5


@dataclass(frozen=True)
class LimitsConfig:
    """Bounds on the work one scan may cause, checked before the arrays are allocated (exit 3 beyond them).
    The scan's own voxel count is bounded separately (pdac.io.MAX_VOXELS)."""

    max_extent_mm: float = 2000.0  # size x spacing of any image axis
    max_stage1_voxels: int = 16_000_000  # the scan resampled to the stage-1 (and pancreas model's) spacing
    max_stage2_voxels: int = 250_000_000  # the crop resampled to the lesion model's spacing


@dataclass(frozen=True)
class RuntimeConfig:
    device: str = "auto"
    threads: int = 0


@dataclass(frozen=True)
class PipelineConfig:
    stage1: Stage1Config = field(default_factory=Stage1Config)
    crop: CropConfig = field(default_factory=CropConfig)
    stage2: Stage2Config = field(default_factory=Stage2Config)
    detection: DetectionConfig = field(default_factory=DetectionConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(section: str, key: str, value: Any, template: Any) -> Any:
    """Convert a TOML/CLI value to the type of the dataclass default it replaces."""
    where = f"{section}.{key}"
    if key == "tta":
        if isinstance(value, str) and value.lower() in ("true", "false"):
            value = value.lower() == "true"
        if isinstance(value, bool) or value == "auto":
            return value
        raise UsageError(f"config {where}: expected true, false or \"auto\", got {value!r}")
    if isinstance(value, str) and not isinstance(template, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            if value.lower() in ("true", "false"):
                value = value.lower() == "true"
            else:
                raise UsageError(f"config {where}: cannot parse {value!r}") from None
    if isinstance(template, bool):
        if not isinstance(value, bool):
            raise UsageError(f"config {where}: expected true/false, got {value!r}")
        return value
    if isinstance(template, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise UsageError(f"config {where}: expected an integer, got {value!r}")
        return value
    if isinstance(template, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UsageError(f"config {where}: expected a number, got {value!r}")
        return float(value)
    if isinstance(template, str):
        return str(value)
    if isinstance(template, tuple):
        if isinstance(value, int | float | str) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list | tuple):
            raise UsageError(f"config {where}: expected a list, got {value!r}")
        if key in ("margins_mm", "spacing_mm", "fallback_extent_mm"):
            if len(value) != 3 or not all(isinstance(v, int | float) and v >= 0 for v in value):
                raise UsageError(f"config {where}: expected three non-negative numbers, got {value!r}")
            return tuple(float(v) for v in value)
        kind = str if key == "checkpoints" else int
        if not all(isinstance(v, kind) and not isinstance(v, bool) for v in value):
            raise UsageError(f"config {where}: expected a list of {kind.__name__}, got {value!r}")
        return tuple(value)
    return value


def _apply(config: PipelineConfig, overrides: dict[str, dict[str, Any]]) -> PipelineConfig:
    sections = {}
    for section, values in overrides.items():
        if not hasattr(config, section) or not isinstance(values, dict):
            raise UsageError(f"config: unknown section {section!r}")
        current = getattr(config, section)
        fields = {f.name for f in dataclasses.fields(current)}
        changes = {}
        for key, value in values.items():
            if key not in fields:
                raise UsageError(f"config: unknown key {section}.{key}")
            changes[key] = _coerce(section, key, value, getattr(current, key))
        sections[section] = dataclasses.replace(current, **changes)
    return dataclasses.replace(config, **sections)


def parse_overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    """Turn ["stage2.tta=false", ...] into {"stage2": {"tta": "false"}}."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        name, sep, value = item.partition("=")
        section, dot, key = name.strip().partition(".")
        if not sep or not dot or not key:
            raise UsageError(f"--set expects section.key=value, got {item!r}")
        out.setdefault(section, {})[key] = value.strip()
    return out


def load_config(path: str | os.PathLike | None = None, overrides: dict | None = None) -> PipelineConfig:
    """Defaults from the dataclasses, then the TOML file, then the overrides."""
    path = Path(path) if path else DEFAULT_CONFIG
    config = PipelineConfig()
    if path.exists():
        try:
            with open(path, "rb") as f:
                config = _apply(config, tomllib.load(f))
        except tomllib.TOMLDecodeError as e:
            raise UsageError(f"config {path}: {e}") from None
    elif path != DEFAULT_CONFIG:
        raise UsageError(f"config file not found: {path}")
    if overrides:
        config = _apply(config, overrides)
    return config
