"""`pdac evaluate`: PANORAMA metrics for one or several sets of detection maps against one label set.

Lesion matching, the patient ROC and the lesion precision-recall curve are picai_eval's, with PANORAMA's
settings (IoU >= 0.1 between a candidate and a connected component of label == 1). On top of that:
bootstrap 95% confidence intervals over cases, FROC operating points, lesion Dice, paired bootstrap
p-values between detection sets, and a report folder (metrics.json, summary.md, roc.png, pr.png, froc.png).

Python API::

    from pdac.evaluation.evaluate import evaluate_arrays, run_evaluation

    result = evaluate_arrays({"c1": det1, "c2": det2}, {"c1": lab1, "c2": lab2})   # in memory
    result.auroc, result.ap, result.score, result.froc().sensitivity_at(0.5)

    report = run_evaluation(["out_a", "out_b"], "labels", "report", names=["A", "B"], n_bootstrap=1000)
    report.data["sets"][0]["auroc"], report.summary
"""

from __future__ import annotations

import contextlib
import dataclasses
import io as _stdio
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from pdac.errors import InputError, OutputError, UsageError
from pdac.infer.io import case_id, image_suffix, read_image, write_json_atomic
from pdac.labels import Label

log = logging.getLogger(__name__)

MIN_OVERLAP = 0.10
OVERLAP_FUNC = "IoU"
PANORAMA_MAX_LABEL = 6  # 0 background, 1 PDAC, 2 veins, 3 arteries, 4 pancreas, 5 duct, 6 common bile duct
DETECTION_SUFFIX = "_detection_map"
GC_MAP_FOLDER = Path("images") / "pdac-detection-map"
GC_LIKELIHOOD = "pdac-likelihood.json"
SENSITIVITY_TARGETS = (0.8, 0.9)
FP_PER_CASE_TARGETS = (0.1, 0.5, 1.0)
# Geometry tolerances between a detection map and its label (NIfTI stores float32 headers).
SPACING_RTOL = 1e-4
ORIGIN_ATOL_MM = 1e-3
DIRECTION_ATOL = 1e-4


def _picai():
    """Import picai_eval without its banner on stdout."""
    with contextlib.redirect_stdout(_stdio.StringIO()):
        from picai_eval import Metrics
        from picai_eval.eval import evaluate_case
    return Metrics, evaluate_case


# ---------------------------------------------------------------------------------------------------------
# Finding files
# ---------------------------------------------------------------------------------------------------------

def _names(items, limit: int = 5) -> str:
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
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: no such likelihoods file") from None
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not a readable JSON file ({str(e).splitlines()[0]})") from None
    if isinstance(data, int | float) and not isinstance(data, bool):
        if len(cases) != 1:
            raise UsageError(f"{path}: a bare likelihood fits a single case, but the detections hold {len(cases)}")
        data = {cases[0]: data}
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected {{case: likelihood}} or a bare number")
    missing = [c for c in cases if c not in data]
    if missing:
        raise InputError(f"{path}: no likelihood for {len(missing)} case(s): {_names(missing)}")
    out = {}
    for c in cases:
        value = data[c]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise InputError(f"{path}: likelihood of {c} is not a finite number: {value!r}")
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


# ---------------------------------------------------------------------------------------------------------
# Per-case evaluation and per-set results
# ---------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class CaseResult:
    lesion_results: list[tuple[int, float, float]]  # picai_eval: (is_lesion, confidence, overlap)
    map_max: float
    dice: float | None  # candidates (map > 0) vs truth (label == 1); None without truth
    num_candidates: int


def pdac_truth(label: np.ndarray) -> np.ndarray:
    """PANORAMA's ground truth for detection: the PDAC label (1) only."""
    return (np.asarray(label) == Label.PDAC).astype(np.int32)


def check_label_values(label: np.ndarray, what: str) -> None:
    """PANORAMA labels hold the integers 0..6; anything else (a huge value that wraps to 1 in a narrower
    integer type, a float mask) would silently change which voxels count as PDAC."""
    if label.size == 0:
        return
    low, high = label.min(), label.max()
    fractional = label.dtype.kind == "f" and bool(np.any(label != np.floor(label)))
    if low < 0 or high > PANORAMA_MAX_LABEL or fractional:
        raise InputError(f"{what}: label values must be PANORAMA's integers 0..{PANORAMA_MAX_LABEL}, found "
                         f"{'non-integer values, ' if fractional else ''}{low:g} to {high:g}")


def evaluate_case(detection: np.ndarray, label: np.ndarray, what: str = "case") -> CaseResult:
    """picai_eval's lesion matching for one case (IoU >= 0.1, truth = label == 1) plus the lesion Dice."""
    _, picai_evaluate_case = _picai()
    detection = np.asarray(detection, dtype=np.float32)
    label = np.asarray(label)
    if detection.shape != label.shape:
        raise InputError(f"{what}: detection map shape {detection.shape} differs from label shape {label.shape}")
    if not np.all(np.isfinite(detection)):
        raise InputError(f"{what}: detection map has non-finite values")
    if detection.size and (detection.min() < 0 or detection.max() > 1):
        raise InputError(f"{what}: detection map values must lie in [0, 1] (likelihoods), found "
                         f"{detection.min():g} to {detection.max():g}")
    try:
        y_list, confidence, _, _ = picai_evaluate_case(
            y_det=detection, y_true=label, min_overlap=MIN_OVERLAP, overlap_func=OVERLAP_FUNC,
            y_true_postprocess_func=pdac_truth)
    except ValueError as e:
        raise InputError(f"{what}: invalid detection map ({str(e).split('. ')[0]})") from None
    truth = pdac_truth(label).astype(bool)
    candidates = detection > 0
    dice = None
    if truth.any():
        dice = float(2.0 * np.count_nonzero(truth & candidates) / (truth.sum() + candidates.sum()))
    num_candidates = int(ndimage.label(candidates, structure=np.ones((3, 3, 3)))[1])
    return CaseResult([(int(a), float(b), float(c)) for a, b, c in y_list], float(confidence), dice, num_candidates)


@dataclasses.dataclass(frozen=True)
class Froc:
    """Lesion FROC built from picai_eval's lesion results.

    Operating points: one per distinct candidate confidence t (descending), keeping candidates with
    confidence >= t, plus the origin (nothing kept). At each point, sensitivity = matched truth lesions kept /
    all truth lesions (a missed lesion never counts), and FP per case = false-positive candidates kept / cases
    (picai_eval's lesion results: a candidate that overlaps a lesion with IoU >= 0.1 but lost the matching to
    another candidate is neither a TP nor an FP). Built here rather than with `Metrics.lesion_TPR/FPR`, whose
    counts replace the lowest threshold's point with FP = inf.

    No interpolation: every reported number is an achievable operating point (a threshold), read off the
    step curve conservatively.

    - `sensitivity_at(x)`: the highest sensitivity among operating points with FP/case <= x (0 if none).
    - `fp_per_case_at(s)`: the lowest FP/case among operating points with sensitivity >= s; None when the
      sensitivity is never reached (some lesions are never detected), nan when there are no truth lesions.
    """

    thresholds: np.ndarray
    fp_per_case: np.ndarray
    sensitivity: np.ndarray
    num_lesions: int
    num_cases: int

    def sensitivity_at(self, fp_per_case: float) -> float:
        if self.num_lesions == 0:
            return math.nan
        ok = self.fp_per_case <= fp_per_case + 1e-12
        return float(self.sensitivity[ok].max()) if ok.any() else 0.0

    def fp_per_case_at(self, sensitivity: float) -> float | None:
        if self.num_lesions == 0:
            return math.nan
        ok = self.sensitivity >= sensitivity - 1e-12
        return float(self.fp_per_case[ok].min()) if ok.any() else None


def froc_from_lesion_results(lesion_results: Mapping[str, Sequence[tuple[int, float, float]]],
                             subject_list: Sequence[str] | None = None) -> Froc:
    """FROC over `subject_list` (default: all cases; repeats allowed) of picai_eval lesion results."""
    cases = list(lesion_results) if subject_list is None else list(subject_list)
    flat = [entry for c in cases for entry in lesion_results[c]]
    is_lesion = np.array([e[0] for e in flat], dtype=bool)
    conf = np.array([e[1] for e in flat], dtype=float)
    num_lesions = int(is_lesion.sum())
    thresholds = np.unique(conf[conf > 0])[::-1]
    tp = np.array([np.count_nonzero(is_lesion & (conf >= t)) for t in thresholds], dtype=float)
    fp = np.array([np.count_nonzero(~is_lesion & (conf >= t)) for t in thresholds], dtype=float)
    n = max(len(cases), 1)
    return Froc(thresholds=np.concatenate([[np.inf], thresholds]),
                fp_per_case=np.concatenate([[0.0], fp / n]),
                sensitivity=np.concatenate([[0.0], tp / num_lesions if num_lesions else np.full(len(tp), np.nan)]),
                num_lesions=num_lesions, num_cases=len(cases))


@dataclasses.dataclass
class SetResult:
    """One detection set evaluated: picai_eval `Metrics` plus per-case Dice and bookkeeping."""

    name: str
    metrics: object  # picai_eval.Metrics
    cases: dict[str, CaseResult]
    prediction_source: str  # "likelihoods" or "map maximum"
    detections: str = ""
    likelihoods_file: str | None = None

    @property
    def subjects(self) -> list[str]:
        return list(self.metrics.subject_list)

    def auroc_of(self, subject_list: Sequence[str] | None = None) -> float:
        subject_list = self.subjects if subject_list is None else subject_list
        targets = {self.metrics.case_target[c] for c in subject_list}
        return float(self.metrics.calc_auroc(subject_list=subject_list)) if targets == {0, 1} else math.nan

    def ap_of(self, subject_list: Sequence[str] | None = None) -> float:
        subject_list = self.subjects if subject_list is None else subject_list
        if not any(self.metrics.case_target[c] for c in subject_list):
            return math.nan
        return float(self.metrics.calc_AP(subject_list=subject_list))

    def fp_per_case_of(self, subject_list: Sequence[str] | None = None) -> float:
        """False-positive candidates per case with every candidate kept (the detection maps as they are): the
        FROC's last operating point."""
        subject_list = self.subjects if subject_list is None else subject_list
        fp = [sum(1 for e in self.metrics.lesion_results[c] if not e[0] and e[1] > 0) for c in subject_list]
        return float(np.mean(fp)) if fp else math.nan

    @property
    def auroc(self) -> float:
        return self.auroc_of()

    @property
    def ap(self) -> float:
        return self.ap_of()

    @property
    def score(self) -> float:
        return (self.auroc + self.ap) / 2

    @property
    def fp_per_case(self) -> float:
        return self.fp_per_case_of()

    def froc(self) -> Froc:
        return froc_from_lesion_results(self.metrics.lesion_results, self.subjects)

    @property
    def dice_mean(self) -> float:
        """Mean lesion Dice over positive cases (nan without positive cases)."""
        values = [r.dice for r in self.cases.values() if r.dice is not None]
        return float(np.mean(values)) if values else math.nan


def _build_metrics(cases: Mapping[str, CaseResult], likelihoods: Mapping[str, float] | None):
    Metrics, _ = _picai()
    names = sorted(cases)
    lesion_results = {c: cases[c].lesion_results for c in names}
    case_target = {c: max((e[0] for e in lesion_results[c]), default=0) for c in names}
    case_pred = {c: float(likelihoods[c]) if likelihoods is not None else cases[c].map_max for c in names}
    return Metrics(lesion_results=lesion_results, case_target=case_target, case_pred=case_pred)


def evaluate_arrays(detections: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray],
                    likelihoods: Mapping[str, float] | None = None, name: str = "detections") -> SetResult:
    """Evaluate in-memory detection maps against raw PANORAMA label arrays (same shapes, same cases)."""
    _check_cases(name, set(detections), set(labels))
    if likelihoods is not None:
        missing = sorted(set(detections) - set(likelihoods))
        if missing:
            raise InputError(f"{name}: no likelihood for {len(missing)} case(s): {_names(missing)}")
    cases = {c: evaluate_case(detections[c], labels[c], f"{name}/{c}") for c in sorted(detections)}
    return SetResult(name, _build_metrics(cases, likelihoods), cases,
                     "likelihoods" if likelihoods is not None else "map maximum")


def _check_cases(name: str, det_cases: set[str], label_cases: set[str]) -> None:
    no_label = det_cases - label_cases
    if no_label:
        raise InputError(f"{name}: {len(no_label)} detection map(s) without a label: {_names(no_label)}")
    no_det = label_cases - det_cases
    if no_det:
        raise InputError(f"{name}: {len(no_det)} label(s) without a detection map: {_names(no_det)}")


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
        _check_cases(name, set(maps), set(labels))
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


def evaluate_sets(sets: Sequence[DetectionSet], labels: Mapping[str, Path]) -> list[SetResult]:
    """Evaluate every set; each label is read once, maps one case at a time (memory stays at one case)."""
    from tqdm import tqdm

    per_set: list[dict[str, CaseResult]] = [{} for _ in sets]
    for c in tqdm(sorted(labels), desc="evaluate", unit="case", disable=None):
        label_img = read_image(labels[c], dtype=None)
        label = sitk.GetArrayFromImage(label_img)
        check_label_values(label, labels[c].name)
        for i, s in enumerate(sets):
            what = f"{s.name}/{c}"
            det_img = read_image(s.maps[c])
            check_geometry(det_img, label_img, what)
            per_set[i][c] = evaluate_case(sitk.GetArrayFromImage(det_img), label, what)
    results = []
    for s, cases in zip(sets, per_set, strict=True):
        likelihoods = load_likelihoods(s.likelihoods_file, sorted(cases)) if s.likelihoods_file else None
        results.append(SetResult(s.name, _build_metrics(cases, likelihoods), cases,
                                 "likelihoods" if likelihoods is not None else "map maximum",
                                 str(s.folder), str(s.likelihoods_file) if s.likelihoods_file else None))
    return results


# ---------------------------------------------------------------------------------------------------------
# Bootstrap
# ---------------------------------------------------------------------------------------------------------

def bootstrap_samples(case_target: Mapping[str, int], n: int, seed: int | None) -> list[list[str]]:
    """`n` resamples of the cases (with replacement, seeded). A resample without both a positive and a negative
    case (AUROC undefined) is discarded and redrawn; none are drawn if the set itself lacks a class."""
    cases = sorted(case_target)
    targets = np.array([case_target[c] for c in cases])
    if n <= 0 or len(set(targets.tolist())) < 2:
        return []
    rng = np.random.default_rng(seed)
    samples: list[list[str]] = []
    attempts = 0
    while len(samples) < n and attempts < 50 * n + 1000:
        attempts += 1
        idx = rng.integers(0, len(cases), len(cases))
        if targets[idx].min() == 0 and targets[idx].max() == 1:
            samples.append([cases[i] for i in idx])
    return samples


def _ci(values: Sequence[float]) -> list[float] | None:
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    return [float(v) for v in np.percentile(values, [2.5, 97.5])] if len(values) else None


def _p_two_sided(diffs: np.ndarray) -> float | None:
    """Paired bootstrap p-value for H0 'no difference': twice the smaller tail of the resampled differences
    around 0 (ties count in both tails), with the (k + 1) / (n + 1) correction, capped at 1."""
    diffs = diffs[np.isfinite(diffs)]
    if not len(diffs):
        return None
    n = len(diffs)
    low = (np.count_nonzero(diffs <= 0) + 1) / (n + 1)
    high = (np.count_nonzero(diffs >= 0) + 1) / (n + 1)
    return float(min(1.0, 2 * min(low, high)))


BOOTSTRAPPED = ("auroc", "ap", "score", "fp_per_case")


def bootstrap(results: Sequence[SetResult], n: int = 1000, seed: int | None = 0) -> dict:
    """95% CIs of AUROC, AP, score and false positives per case for each set, and paired comparisons of every
    set against the first one (the same resampled cases for all sets)."""
    ref = results[0]
    samples = bootstrap_samples(ref.metrics.case_target, n, seed)
    values = []
    for r in results:
        auroc = np.array([r.auroc_of(s) for s in samples])
        ap = np.array([r.ap_of(s) for s in samples])
        fp = np.array([r.fp_per_case_of(s) for s in samples])
        values.append({"auroc": auroc, "ap": ap, "score": (auroc + ap) / 2, "fp_per_case": fp})
    cis = [{k: _ci(v[k]) for k in BOOTSTRAPPED} for v in values]
    comparisons = []
    for r, v in zip(results[1:], values[1:], strict=True):
        comp: dict = {"set": r.name, "reference": ref.name}
        for k in BOOTSTRAPPED:
            diffs = v[k] - values[0][k]
            comp[f"delta_{k}"] = getattr(r, k) - getattr(ref, k)
            comp[f"delta_{k}_ci"] = _ci(diffs)
            comp[f"p_{k}"] = _p_two_sided(diffs)
        comparisons.append(comp)
    return {"n_resamples": len(samples), "ci": cis, "comparisons": comparisons}


# ---------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------

def _clean(value):
    """JSON-safe: numpy scalars/arrays to Python, nan/inf to None."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_clean(v) for v in value]
    if isinstance(value, np.integer | bool | np.bool_):
        return bool(value) if isinstance(value, bool | np.bool_) else int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return value


def _key(x: float) -> str:
    return f"{x:g}"


def set_summary(r: SetResult, ci: dict | None) -> dict:
    froc = r.froc()
    m = r.metrics
    return {
        "name": r.name,
        "detections": r.detections,
        "likelihoods": r.likelihoods_file,
        "case_prediction": r.prediction_source,
        "num_cases": m.num_cases,
        "num_positive_cases": int(sum(m.case_target.values())),
        "num_lesions": int(m.num_lesions),
        "auroc": r.auroc,
        "ap": r.ap,
        "score": r.score,
        "fp_per_case": r.fp_per_case,
        "ci95": ci or dict.fromkeys(BOOTSTRAPPED),
        "sensitivity_at_fp_per_case": {_key(x): froc.sensitivity_at(x) for x in FP_PER_CASE_TARGETS},
        "fp_per_case_at_sensitivity": {_key(s): froc.fp_per_case_at(s) for s in SENSITIVITY_TARGETS},
        "dice_mean_positive": r.dice_mean,
        "froc": {"threshold": froc.thresholds[1:], "fp_per_case": froc.fp_per_case[1:],
                 "sensitivity": froc.sensitivity[1:]},
        "cases": {
            c: {"target": int(m.case_target[c]), "prediction": float(m.case_pred[c]), "map_max": cr.map_max,
                "dice": cr.dice, "num_candidates": cr.num_candidates,
                "lesions": [list(e) for e in cr.lesion_results]}
            for c, cr in sorted(r.cases.items())
        },
    }


def _fmt(v, ci=None, digits=3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    def text(x: float) -> str:
        return f"{round(x, digits) + 0.0:.{digits}f}"  # + 0.0: no "-0.000"

    return f"{text(v)} [{text(ci[0])}, {text(ci[1])}]" if ci else text(v)


def _fmt_p(p) -> str:
    return "n/a" if p is None else (f"{p:.3f}" if p >= 0.001 else f"{p:.1e}")


def summary_markdown(data: dict) -> str:
    sets = data["sets"]
    n_boot = data["settings"]["bootstrap_resamples"]
    ci_note = f" [95% CI, {n_boot} bootstrap resamples of cases]" if n_boot else ""
    lines = [f"# PANORAMA evaluation: {data['num_cases']} cases ({data['num_positive_cases']} positive, "
             f"{data['num_lesions']} lesions)", "",
             f"picai_eval, IoU >= {MIN_OVERLAP:g}, truth = label == 1; score = (AUROC + AP) / 2{ci_note}.", ""]
    lines.append("| metric | " + " | ".join(s["name"] for s in sets) + " |")
    lines.append("|---|" + "---|" * len(sets))
    rows = [
        ("AUROC (patient)", lambda s: _fmt(s["auroc"], s["ci95"]["auroc"])),
        ("AP (lesion)", lambda s: _fmt(s["ap"], s["ci95"]["ap"])),
        ("score", lambda s: _fmt(s["score"], s["ci95"]["score"])),
    ]
    rows += [(f"sensitivity @ {k} FP/case", lambda s, k=k: _fmt(s["sensitivity_at_fp_per_case"][k]))
             for k in map(_key, FP_PER_CASE_TARGETS)]
    rows += [(f"FP/case @ {float(k):.0%} sensitivity",
              lambda s, k=k: _fmt(s["fp_per_case_at_sensitivity"][k]) if s["fp_per_case_at_sensitivity"][k]
              is not None or not s["num_lesions"] else "not reached") for k in map(_key, SENSITIVITY_TARGETS)]
    rows += [("FP/case, all candidates kept", lambda s: _fmt(s["fp_per_case"], s["ci95"]["fp_per_case"])),
             ("lesion Dice (mean, positive cases)", lambda s: _fmt(s["dice_mean_positive"])),
             ("patient prediction", lambda s: s["case_prediction"])]
    for title, cell in rows:
        lines.append(f"| {title} | " + " | ".join(cell(s) for s in sets) + " |")
    if data["comparisons"]:
        lines += ["", f"Paired bootstrap vs {sets[0]['name']} (two-sided p, same resampled cases):", "",
                  "| set | ΔAUROC [95% CI] | p (AUROC) | ΔAP [95% CI] | p (AP) | Δscore | p (score) "
                  "| ΔFP/case [95% CI] | p (FP/case) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for c in data["comparisons"]:
            lines.append(f"| {c['set']} | {_fmt(c['delta_auroc'], c['delta_auroc_ci'])} | {_fmt_p(c['p_auroc'])} | "
                         f"{_fmt(c['delta_ap'], c['delta_ap_ci'])} | {_fmt_p(c['p_ap'])} | "
                         f"{_fmt(c['delta_score'])} | {_fmt_p(c['p_score'])} | "
                         f"{_fmt(c['delta_fp_per_case'], c['delta_fp_per_case_ci'])} | {_fmt_p(c['p_fp_per_case'])} |")
    return "\n".join(lines) + "\n"


def save_plots(results: Sequence[SetResult], out_dir: Path) -> None:
    """roc.png (patient ROC), pr.png (lesion precision-recall), froc.png (lesion FROC), sets overlaid."""
    from matplotlib.figure import Figure

    figs = {name: Figure(figsize=(5.5, 5)) for name in ("roc", "pr", "froc")}
    axes = {name: fig.add_subplot() for name, fig in figs.items()}
    max_fp = 1.0
    for r in results:
        if math.isfinite(r.auroc):
            roc = r.metrics.calculate_ROC()
            axes["roc"].plot(roc["FPR"], roc["TPR"], label=f"{r.name} (AUROC {r.auroc:.3f})")
        if math.isfinite(r.ap):
            pr = r.metrics.calculate_precision_recall()
            # sklearn's order is by decreasing recall; AP integrates each recall step at its higher end's precision
            axes["pr"].step(pr["recall"][::-1], pr["precision"][::-1], where="pre", label=f"{r.name} (AP {r.ap:.3f})")
        froc = r.froc()
        if froc.num_lesions:
            axes["froc"].step(froc.fp_per_case, froc.sensitivity, where="post", label=r.name)
            max_fp = max(max_fp, float(froc.fp_per_case[-1]))
    axes["roc"].plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    for x in FP_PER_CASE_TARGETS:
        axes["froc"].axvline(x, color="grey", lw=0.6, ls=":")
    labels = {"roc": ("1 - specificity (patients)", "sensitivity (patients)", "ROC"),
              "pr": ("recall (lesions)", "precision (lesions)", "Precision-recall"),
              "froc": ("false positives per case", "sensitivity (lesions)", "FROC")}
    for name, ax in axes.items():
        xlabel, ylabel, title = labels[name]
        ax.set(xlabel=xlabel, ylabel=ylabel, title=title, ylim=(-0.02, 1.02),
               xlim=(0, min(max_fp, 5.0) * 1.02) if name == "froc" else (-0.02, 1.02))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right", fontsize=8)
        path = out_dir / f"{name}.png"
        try:
            figs[name].savefig(path, dpi=100, bbox_inches="tight")
        except OSError as e:
            raise OutputError(f"cannot write {path}: {e.strerror or e}") from None


@dataclasses.dataclass
class EvaluationReport:
    data: dict  # what metrics.json holds
    summary: str  # summary.md
    results: list[SetResult]


def build_report(results: Sequence[SetResult], label_dir: str = "", n_bootstrap: int = 1000,
                 seed: int | None = 0) -> EvaluationReport:
    boot = bootstrap(results, n_bootstrap, seed)
    ref = results[0].metrics
    data = {
        "settings": {"min_overlap": MIN_OVERLAP, "overlap_func": OVERLAP_FUNC, "truth": "label == 1",
                     "bootstrap": n_bootstrap, "bootstrap_resamples": boot["n_resamples"], "seed": seed,
                     "froc": "step curve, no interpolation (see pdac.evaluation.evaluate.Froc)"},
        "labels": str(label_dir),
        "num_cases": ref.num_cases,
        "num_positive_cases": int(sum(ref.case_target.values())),
        "num_lesions": int(ref.num_lesions),
        "sets": [set_summary(r, ci if boot["n_resamples"] else None)
                 for r, ci in zip(results, boot["ci"], strict=True)],
        "comparisons": boot["comparisons"],
    }
    data = _clean(data)
    return EvaluationReport(data, summary_markdown(data), list(results))


def write_report(report: EvaluationReport, out_dir: str | Path) -> None:
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "summary.md").write_text(report.summary)
    except OSError as e:
        raise OutputError(f"cannot write to {out_dir}: {e.strerror or e}") from None
    write_json_atomic(report.data, out_dir / "metrics.json")
    save_plots(report.results, out_dir)


def run_evaluation(detection_dirs: Sequence[str | Path], label_dir: str | Path, out_dir: str | Path,
                   likelihood_files: Sequence[str | Path | None] | None = None, names: Sequence[str] | None = None,
                   n_bootstrap: int = 1000, seed: int | None = 0) -> EvaluationReport:
    """Evaluate detection folders against `label_dir` and write the report to `out_dir`."""
    if n_bootstrap < 0:
        raise UsageError("--bootstrap must be >= 0")
    sets, labels = discover(detection_dirs, label_dir, likelihood_files, names)
    for s in sets:  # fail on bad likelihood files before the (long) evaluation
        if s.likelihoods_file:
            load_likelihoods(s.likelihoods_file, sorted(s.maps))
        elif likelihood_files is None and s.layout == "detect" and (s.folder / GC_LIKELIHOOD).is_file():
            log.info("%s: patient predictions from the maps' maxima (pass --likelihoods %s to use that file)",
                     s.name, s.folder / GC_LIKELIHOOD)
    results = evaluate_sets(sets, labels)
    for r in results:
        if len({r.metrics.case_target[c] for c in r.subjects}) < 2:
            log.warning("%s: all cases are %s; AUROC is undefined", r.name,
                        "positive" if r.metrics.num_lesions else "negative")
    report = build_report(results, str(label_dir), n_bootstrap, seed)
    write_report(report, out_dir)
    return report
