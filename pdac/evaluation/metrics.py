"""PANORAMA's metrics: picai_eval's lesion matching per case (IoU >= 0.1 against label == 1), the patient ROC and
lesion precision-recall of a detection set (`SetResult`), and the lesion FROC."""

from __future__ import annotations

import contextlib
import dataclasses
import io as _stdio
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from pdac.errors import InputError
from pdac.evaluation.discovery import DetectionSet, check_cases, check_geometry, load_likelihoods, name_list
from pdac.infer.io import read_image
from pdac.labels import Label

MIN_OVERLAP = 0.10
OVERLAP_FUNC = "IoU"


def _picai():
    """Import picai_eval without its banner on stdout."""
    with contextlib.redirect_stdout(_stdio.StringIO()):
        from picai_eval import Metrics
        from picai_eval.eval import evaluate_case
    return Metrics, evaluate_case



@dataclasses.dataclass
class CaseEvaluation:
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
    low, high, top = label.min(), label.max(), int(max(Label))
    fractional = label.dtype.kind == "f" and bool(np.any(label != np.floor(label)))
    if low < 0 or high > top or fractional:
        raise InputError(f"{what}: label values must be PANORAMA's integers 0..{top}, found "
                         f"{'non-integer values, ' if fractional else ''}{low:g} to {high:g}")


def evaluate_case(detection: np.ndarray, label: np.ndarray, what: str = "case") -> CaseEvaluation:
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
    return CaseEvaluation([(int(a), float(b), float(c)) for a, b, c in y_list], float(confidence), dice, num_candidates)


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
    cases: dict[str, CaseEvaluation]
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


def _build_metrics(cases: Mapping[str, CaseEvaluation], likelihoods: Mapping[str, float] | None):
    Metrics, _ = _picai()
    names = sorted(cases)
    lesion_results = {c: cases[c].lesion_results for c in names}
    case_target = {c: max((e[0] for e in lesion_results[c]), default=0) for c in names}
    case_pred = {c: float(likelihoods[c]) if likelihoods is not None else cases[c].map_max for c in names}
    return Metrics(lesion_results=lesion_results, case_target=case_target, case_pred=case_pred)


def evaluate_arrays(detections: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray],
                    likelihoods: Mapping[str, float] | None = None, name: str = "detections") -> SetResult:
    """Evaluate in-memory detection maps against raw PANORAMA label arrays (same shapes, same cases)."""
    check_cases(name, set(detections), set(labels))
    if likelihoods is not None:
        missing = sorted(set(detections) - set(likelihoods))
        if missing:
            raise InputError(f"{name}: no likelihood for {len(missing)} case(s): {name_list(missing)}")
    cases = {c: evaluate_case(detections[c], labels[c], f"{name}/{c}") for c in sorted(detections)}
    return SetResult(name, _build_metrics(cases, likelihoods), cases,
                     "likelihoods" if likelihoods is not None else "map maximum")



def evaluate_sets(sets: Sequence[DetectionSet], labels: Mapping[str, Path]) -> list[SetResult]:
    """Evaluate every set; each label is read once, maps one case at a time (memory stays at one case)."""
    from tqdm import tqdm

    per_set: list[dict[str, CaseEvaluation]] = [{} for _ in sets]
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

