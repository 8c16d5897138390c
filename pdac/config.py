"""Typed pipeline configuration: built-in defaults, a TOML file, then command-line overrides.

The dataclasses below are the defaults and ship with the package. Which TOML file is applied on top
(first found wins): `--config FILE`, `$PDAC_CONFIG`, then `resources/pipeline.toml` of the checkout (or
of /opt/app in the container) when it exists. A wheel installed elsewhere runs on the built-in defaults.
`resources/pipeline.toml` as committed states the defaults (a test keeps it equal to the dataclasses), so
it is the file to edit.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from pdac.errors import UsageError
from pdac.labels import PANCREAS_LABELS

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "resources" / "pipeline.toml"

Vec3 = tuple[float, float, float]


@dataclass(frozen=True)
class Range:
    """The allowed values of a numeric setting (of each item, for tuples): lo <= v <= hi, or lo < v when
    `open_low`. Every float must also be finite. Declared beside the setting with `setting(...)`."""

    lo: float
    hi: float
    open_low: bool = False

    def holds(self, v: float) -> bool:
        if isinstance(v, float) and not math.isfinite(v):  # (math.isfinite would overflow on a huge int)
            return False
        return (self.lo < v if self.open_low else self.lo <= v) and v <= self.hi

    def __str__(self) -> str:
        return f"{'(' if self.open_low else '['}{self.lo:g}, {self.hi:g}]"


def setting(default: Any, lo: float, hi: float, open_low: bool = False) -> Any:
    """A dataclass field with its allowed range (checked by `validate`)."""
    return field(default=default, metadata={"range": Range(lo, hi, open_low)})


MAX_THREADS = 1024


@dataclass(frozen=True)
class ModelConfig:
    model: str
    folds: tuple[int, ...] = setting((), 0, 99)
    checkpoints: tuple[str, ...] = ("checkpoint_final.pth",)
    # Below 0.25 the tiles (and the time) grow as 1/step^3 for no measured gain (nnU-Net uses 0.5).
    tile_step_size: float = setting(0.5, 0.25, 1.0)
    tta: bool | Literal["auto"] = False  # mirroring; "auto": on with CUDA, off on the CPU

    def mirroring_on(self, device_type: str) -> bool:
        return self.tta if isinstance(self.tta, bool) else device_type == "cuda"


@dataclass(frozen=True)
class Stage1Config(ModelConfig):
    model: str = "pancreas"
    spacing_mm: Vec3 = setting((4.5, 4.5, 9.0), 0.1, 50.0)
    pancreas_labels: tuple[int, ...] = setting(PANCREAS_LABELS, 1, 255)


@dataclass(frozen=True)
class CropConfig:
    margins_mm: Vec3 = setting((100.0, 50.0, 15.0), 0.0, 1000.0)
    fallback_extent_mm: Vec3 = setting((320.0, 175.0, 100.0), 1.0, 2000.0)
    max_extent_mm: Vec3 = setting((400.0, 250.0, 200.0), 1.0, 2000.0)  # a pancreas-sized crop at most


@dataclass(frozen=True)
class Stage2Config(ModelConfig):
    model: str = "lesion"
    checkpoints: tuple[str, ...] = ("checkpoint_best_panorama.pth", "checkpoint_final.pth")
    tta: bool | Literal["auto"] = "auto"
    lesion_channel: int = setting(1, 1, 255)  # also checked against the lesion model's outputs


@dataclass(frozen=True)
class DetectionConfig:
    mask_to_pancreas: bool = True
    pancreas_dilation_mm: float = setting(15.0, 0.0, 200.0)
    min_tissue_hu: float = setting(-500.0, -2000.0, 4000.0)
    dynamic_threshold_factor: float = setting(2.5, 1.0, 1000.0, open_low=True)  # threshold = peak / factor
    min_voxels_detection: int = setting(10, 0, 10_000_000)
    num_lesions_to_extract: int = setting(5, 1, 1000)


@dataclass(frozen=True)
class LimitsConfig:
    """Bounds on the work one scan may cause, checked before the arrays are allocated (exit 3 beyond them).
    The scan's own voxel count is bounded separately (pdac.infer.io.MAX_VOXELS)."""

    max_extent_mm: float = setting(2000.0, 1.0, 100_000.0)  # size x spacing of any image axis
    # the scan resampled to the stage-1 (and pancreas model's) spacing
    max_stage1_voxels: int = setting(16_000_000, 1, 1_000_000_000)
    max_stage2_voxels: int = setting(250_000_000, 1, 1_000_000_000)  # the crop at the lesion model's spacing


@dataclass(frozen=True)
class PlausibilityConfig:
    """Is what stage 1 calls the pancreas anatomically possible? Sources of the numbers: resources/pipeline.toml."""

    action: Literal["warn", "fallback"] = "warn"  # fallback: an implausible pancreas counts as not found
    min_volume_ml: float = setting(15.0, 0.0, 10_000.0)
    max_volume_ml: float = setting(250.0, 0.0, 10_000.0)
    min_median_hu: float = setting(20.0, -2000.0, 4000.0)
    max_median_hu: float = setting(200.0, -2000.0, 4000.0)
    check_pelvis: bool = True  # a pancreas below the top of the bony pelvis (iliac crests) is implausible
    ct_air_max_hu: float = setting(-500.0, -2000.0, 4000.0)  # a CT shows air: its darkest 0.1% of voxels lie below this


@dataclass(frozen=True)
class RuntimeConfig:
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = setting(0, 0, MAX_THREADS)  # 0: all cores
    # Lesion-network arithmetic on the CPU: bf16 = bfloat16 autocast; auto = bf16 where the processor has native
    # bfloat16 instructions (avx512_bf16 / amx_bf16), else fp32. Stage 1 always runs in fp32 on the CPU
    # (pdac.infer.models.stage1_precision). On CUDA nnU-Net's own mixed precision is used.
    precision: Literal["auto", "fp32", "bf16"] = "fp32"


@dataclass(frozen=True)
class PipelineConfig:
    stage1: Stage1Config = field(default_factory=Stage1Config)
    crop: CropConfig = field(default_factory=CropConfig)
    stage2: Stage2Config = field(default_factory=Stage2Config)
    detection: DetectionConfig = field(default_factory=DetectionConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    plausibility: PlausibilityConfig = field(default_factory=PlausibilityConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _parse_text(value: str, where: str) -> Any:
    """A `--set` value is text: read it as JSON (numbers, lists, true/false), else as the word itself."""
    from pdac.safe_read import MAX_DEPTH, nesting_depth

    if nesting_depth(value) > MAX_DEPTH:
        raise UsageError(f"config {where}: value nested more than {MAX_DEPTH} levels deep")
    try:
        return json.loads(value)
    except (ValueError, RecursionError):  # not JSON, or an integer of over 4,300 digits
        return value.lower() == "true" if value.lower() in ("true", "false") else value


def _coerce(where: str, value: Any, hint: Any) -> Any:
    """Convert a TOML/CLI value to the field's declared type; refuse anything else with one line."""
    origin, args = get_origin(hint), get_args(hint)
    if isinstance(value, str) and hint is not str and not (origin is Literal and value in args):
        value = _parse_text(value, where)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise UsageError(f"config {where}: expected true/false, got {_shown(value)}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise UsageError(f"config {where}: expected an integer, got {_shown(value)}")
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:
                raise UsageError(f"config {where}: {str(value)[:20]}... is too large a number") from None
        raise UsageError(f"config {where}: expected a number, got {_shown(value)}")
    if hint is str:
        return str(value)
    if origin is Literal:
        if value in args:
            return value
        raise UsageError(f"config {where}: expected one of {', '.join(map(repr, args))}, got {_shown(value)}")
    if origin in (Union, UnionType):
        for option in args:
            try:
                return _coerce(where, value, option)
            except UsageError:
                continue
        raise UsageError(f"config {where}: expected {' or '.join(_describe(a) for a in args)}, got {_shown(value)}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            value = [value]
        if args[-1] is Ellipsis:
            return tuple(_coerce(where, v, args[0]) for v in value)
        if len(value) != len(args):
            raise UsageError(f"config {where}: expected {len(args)} values, got {_shown(value)}")
        return tuple(_coerce(where, v, a) for v, a in zip(value, args, strict=True))
    raise TypeError(f"config {where}: unsupported field type {hint!r}")  # a programming error, not user input


def _describe(hint: Any) -> str:
    if get_origin(hint) is Literal:
        return " or ".join(map(repr, get_args(hint)))
    return "true/false" if hint is bool else getattr(hint, "__name__", str(hint))


def _apply(config: PipelineConfig, overrides: dict[str, dict[str, Any]]) -> PipelineConfig:
    sections = {}
    for section, values in overrides.items():
        if not hasattr(config, section) or not isinstance(values, dict):
            raise UsageError(f"config: unknown section {section!r}")
        current = getattr(config, section)
        hints = get_type_hints(type(current))
        changes = {}
        for key, value in values.items():
            if key not in hints:
                raise UsageError(f"config: unknown key {section}.{key}")
            changes[key] = _coerce(f"{section}.{key}", value, hints[key])
        sections[section] = dataclasses.replace(current, **changes)
    return dataclasses.replace(config, **sections)


def allowed(section: str, key: str) -> str:
    """The declared range of a setting as text, for help texts."""
    spec = {f.name: f for f in dataclasses.fields(PipelineConfig)}[section]
    return str({f.name: f for f in dataclasses.fields(spec.default_factory)}[key].metadata["range"])


# Pairs (lower, upper) of settings of one section that must be in order.
ORDERED = {"plausibility": (("min_volume_ml", "max_volume_ml"), ("min_median_hu", "max_median_hu"))}


def validate(config: PipelineConfig) -> PipelineConfig:
    """Check every setting against its declared `Range` (each item of a tuple; every float finite) and the
    ordered pairs; refuse the first violation in one line naming the setting and its allowed values."""
    for section in dataclasses.fields(config):
        values = getattr(config, section.name)
        for f in dataclasses.fields(values):
            value = getattr(values, f.name)
            where = f"{section.name}.{f.name}"
            items = value if isinstance(value, tuple) else (value,)
            numbers = [v for v in items if isinstance(v, int | float) and not isinstance(v, bool)]
            allowed = f.metadata.get("range")
            if allowed is not None and not all(allowed.holds(v) for v in numbers):
                each = "each in " if isinstance(value, tuple) else ""
                raise UsageError(f"config {where} = {_shown(value)}: allowed {each}{allowed} "
                                 "(from the TOML, $PDAC_CONFIG, --set or a flag)")
            if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
                raise UsageError(f"config {where} = {_shown(value)}: must be a finite number")
        for low, high in ORDERED.get(section.name, ()):
            if getattr(values, low) > getattr(values, high):
                raise UsageError(f"config {section.name}.{low} ({getattr(values, low):g}) must not exceed "
                                 f"{section.name}.{high} ({getattr(values, high):g})")
    return config


def _shown(value: Any) -> str:
    text = repr(list(value) if isinstance(value, tuple) else value)
    return text if len(text) <= 60 else text[:57] + "..."


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


def config_file(path: str | os.PathLike | None = None) -> Path | None:
    """The TOML file to apply: the given one, $PDAC_CONFIG, or the checkout's resources/pipeline.toml."""
    chosen = path or os.environ.get("PDAC_CONFIG")
    if chosen:
        if not Path(chosen).is_file():
            raise UsageError(f"config file not found: {chosen}")
        return Path(chosen)
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None


def load_config(path: str | os.PathLike | None = None, overrides: dict | None = None) -> PipelineConfig:
    """Built-in defaults, then the TOML file (see `config_file`), then the overrides; validated once."""
    from pdac.safe_read import MAX_DEPTH, nesting_depth, read_regular_file

    config = PipelineConfig()
    toml = config_file(path)
    if toml is not None:
        text = read_regular_file(toml, UsageError, max_bytes=1024 * 1024)
        if nesting_depth(text) > MAX_DEPTH:
            raise UsageError(f"config {toml}: nested more than {MAX_DEPTH} levels deep")
        try:
            config = _apply(config, tomllib.loads(text.decode("utf-8")))
        except (ValueError, RecursionError) as e:  # TOMLDecodeError, UnicodeDecodeError, a 5,000-digit integer
            raise UsageError(f"config {toml}: {type(e).__name__ if isinstance(e, RecursionError) else e}") from None
    if overrides:
        config = _apply(config, overrides)
    return validate(config)
