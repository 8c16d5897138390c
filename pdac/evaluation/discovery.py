"""Finding what to evaluate: detection maps (`pdac detect` or Grand Challenge layouts), labels, likelihood files,
and a check that every map lies on its label's grid (headers only, before any pixel is read)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from pdac.errors import InputError, UsageError
from pdac.infer.io import case_id, image_suffix
from pdac.safe_read import read_json

DETECTION_SUFFIX = "_detection_map"
GC_MAP_FOLDER = Path("images") / "pdac-detection-map"
GC_LIKELIHOOD = "pdac-likelihood.json"

# Geometry tolerances between a detection map and its label (NIfTI stores float32 headers).
SPACING_RTOL = 1e-4
ORIGIN_ATOL_MM = 1e-3
DIRECTION_ATOL = 1e-4


def name_list(items, limit: int = 5) -> str:
    """The first `limit` names (sorted) for a one-line message, and how many more."""
    items = sorted(items)
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def _single_gc_map(folder: Path) -> Path | None:
    maps_dir = folder / GC_MAP_FOLDER
    if not maps_dir.is_dir():
        return None
    maps = sorted(p for p in maps_dir.iterdir() if p.is_file() and image_suffix(p))
    if len(maps) != 1:
        raise UsageError(f"{maps_dir}: expected one detection map in the Grand Challenge layout, found {len(maps)}")
    return maps[0]


def find_detection_maps(folder: Path) -> tuple[dict[str, Path], str]:
    """Detection maps in `folder` as {case: path} plus the layout found.

    Layouts: "detect" (`<case>_detection_map.mha|.nii.gz`, as written by `pdac detect`), "gc" (the folder is
    one case in the Grand Challenge layout, `images/pdac-detection-map/detection_map.mha`; the case id is the
    folder's name), "gc-cases" (sub-folders, each one case in the GC layout, named after the sub-folder).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder")
    maps: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        suffix = image_suffix(p) if p.is_file() else None
        if suffix and p.name[: -len(suffix)].endswith(DETECTION_SUFFIX):
            case = p.name[: -len(suffix) - len(DETECTION_SUFFIX)]
            if case in maps:
                raise UsageError(f"{folder}: several detection maps for case {case}")
            maps[case] = p
    if maps:
        return maps, "detect"
    single = _single_gc_map(folder)
    if single is not None:
        return {folder.resolve().name: single}, "gc"
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        found = _single_gc_map(sub)
        if found is not None:
            maps[sub.name] = found
    if maps:
        return maps, "gc-cases"
    raise UsageError(f"{folder}: no detection maps found (expected <case>{DETECTION_SUFFIX}.mha/.nii.gz "
                     f"or the Grand Challenge layout {GC_MAP_FOLDER}/detection_map.mha)")


def find_labels(folder: Path) -> dict[str, Path]:
    """Label files `<case>.nii.gz` / `<case>.mha` (PANORAMA labels 0..6) in `folder`, as {case: path}."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder")
    labels: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and image_suffix(p):
            case = case_id(p, strip_channel=False)
            if case in labels:
                raise UsageError(f"{folder}: several label files for case {case}")
            labels[case] = p
    if not labels:
        raise UsageError(f"{folder}: no label files found (expected <case>.nii.gz or <case>.mha)")
    return labels


def load_likelihoods(path: Path, cases: Sequence[str]) -> dict[str, float]:
    """Patient likelihoods for `cases` from a `{case: float}` JSON (`pdac detect`) or a bare number (GC layout,
    only for a single case). Extra cases in the file are ignored; missing ones are an error."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such likelihoods file")
    data = read_json(path, InputError)  # a regular file, strict JSON, bounded size and nesting depth
    if isinstance(data, int | float) and not isinstance(data, bool):
        if len(cases) != 1:
            raise UsageError(f"{path}: a bare likelihood fits a single case, but the detections hold {len(cases)}")
        data = {cases[0]: data}
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected {{case: likelihood}} or a bare number")
    missing = [c for c in cases if c not in data]
    if missing:
        raise InputError(f"{path}: no likelihood for {len(missing)} case(s): {name_list(missing)}")
    out = {}
    for c in cases:
        value = data[c]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
                or not 0 <= value <= 1:  # as `pdac merge` refuses
            raise InputError(f"{path}: likelihood of {c} is not a number in [0, 1]: {str(value)[:40]}")
        out[c] = float(value)
    return out


def _round(values) -> tuple:
    return tuple(round(float(x), 4) for x in values)


def check_geometry(det: sitk.Image | sitk.ImageFileReader, label: sitk.Image | sitk.ImageFileReader,
                   what: str) -> None:
    """Refuse a detection map whose grid (size, spacing, origin, direction) differs from its label's."""
    checks = (
        ("size", det.GetSize(), label.GetSize(), lambda a, b: tuple(a) == tuple(b)),
        ("spacing", det.GetSpacing(), label.GetSpacing(), lambda a, b: np.allclose(a, b, rtol=SPACING_RTOL, atol=0)),
        ("origin", det.GetOrigin(), label.GetOrigin(), lambda a, b: np.allclose(a, b, rtol=0, atol=ORIGIN_ATOL_MM)),
        ("direction", det.GetDirection(), label.GetDirection(),
         lambda a, b: np.allclose(a, b, rtol=0, atol=DIRECTION_ATOL)),
    )
    for name, a, b, same in checks:
        if len(a) != len(b) or not same(a, b):
            raise InputError(f"{what}: detection map and label differ in {name}: {_round(a)} vs {_round(b)}")


def _header(path: Path) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise InputError(f"{path}: cannot read image header") from None
    return reader


class _HeaderGeometry:
    """Header geometry with a 4D singleton axis dropped (as `pdac.infer.io.read_image` does)."""

    def __init__(self, path: Path):
        r = _header(path)
        n = 3 if r.GetDimension() == 4 and r.GetSize()[3] == 1 else r.GetDimension()
        d = r.GetDimension()
        self.size, self.spacing, self.origin = r.GetSize()[:n], r.GetSpacing()[:n], r.GetOrigin()[:n]
        self.direction = tuple(r.GetDirection()[i * d + j] for i in range(n) for j in range(n))

    def GetSize(self):  # noqa: N802 - mirrors SimpleITK
        return self.size

    def GetSpacing(self):  # noqa: N802
        return self.spacing

    def GetOrigin(self):  # noqa: N802
        return self.origin

    def GetDirection(self):  # noqa: N802
        return self.direction



def check_cases(name: str, det_cases: set[str], label_cases: set[str]) -> None:
    no_label = det_cases - label_cases
    if no_label:
        raise InputError(f"{name}: {len(no_label)} detection map(s) without a label: {name_list(no_label)}")
    no_det = label_cases - det_cases
    if no_det:
        raise InputError(f"{name}: {len(no_det)} label(s) without a detection map: {name_list(no_det)}")


@dataclasses.dataclass
class DetectionSet:
    """A folder of detection maps to evaluate (optionally with a likelihoods JSON)."""

    name: str
    folder: Path
    maps: dict[str, Path]
    layout: str
    likelihoods_file: Path | None = None


def discover(detection_dirs: Sequence[str | Path], label_dir: str | Path,
             likelihood_files: Sequence[str | Path | None] | None = None,
             names: Sequence[str] | None = None) -> tuple[list[DetectionSet], dict[str, Path]]:
    """Find every map and label, pair them, and check every pair's geometry (headers only) before any work."""
    if not detection_dirs:
        raise UsageError("give at least one detections folder")
    if likelihood_files is not None and len(likelihood_files) != len(detection_dirs):
        raise UsageError(f"--likelihoods: got {len(likelihood_files)} file(s) for {len(detection_dirs)} "
                         "detections folder(s) (use '-' for a set without one)")
    if names is not None:
        if len(names) != len(detection_dirs):
            raise UsageError(f"--names: got {len(names)} name(s) for {len(detection_dirs)} detections folder(s)")
        if len(set(names)) != len(names):
            raise UsageError("--names must be unique")
    else:
        names = _default_names(detection_dirs)
    labels = find_labels(Path(label_dir))
    sets = []
    for i, (folder, name) in enumerate(zip(detection_dirs, names, strict=True)):
        maps, layout = find_detection_maps(Path(folder))
        check_cases(name, set(maps), set(labels))
        lik = likelihood_files[i] if likelihood_files is not None else None
        lik = None if lik in (None, "-", "") else Path(lik)
        sets.append(DetectionSet(name, Path(folder), maps, layout, lik))
    label_headers = {c: _HeaderGeometry(p) for c, p in labels.items()}
    for s in sets:
        for c, p in s.maps.items():
            check_geometry(_HeaderGeometry(p), label_headers[c], f"{s.name}/{c}")
    return sets, labels


def _default_names(dirs: Sequence[str | Path]) -> list[str]:
    names = [Path(d).resolve().name or str(d) for d in dirs]
    if len(set(names)) != len(names):
        names = [str(d) for d in dirs]
    out: list[str] = []
    for n in names:
        out.append(n if n not in out else f"{n} ({len(out) + 1})")
    return out

