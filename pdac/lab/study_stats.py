"""The study's statistics: one arm's runs pooled over training seeds, its endpoints, and the two-level bootstrap
over training seeds and test cases that gives the pre-registered comparisons their CIs (docs/study/PROTOCOL.md).

A run is one arm trained with one seed and scored on the held-out cases; its per-case picai_eval lesion results
and likelihoods are all the endpoints need, so everything here works from the committed run records.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from pdac.evaluation.metrics import froc_from_lesion_results

MATCHED_SENSITIVITY = 0.8  # the pre-registered operating point (or the highest both arms reach, if lower)
PRIMARY_CI_LEVEL = 0.975  # two primary hypotheses, Bonferroni: 0.05 / 2 two-sided each
SECONDARY_CI_LEVEL = 0.95


@dataclass(frozen=True)
class PooledArm:
    """One arm's runs over seeds, keyed "<seed>/<case>" (every seed scored on the same cases)."""

    name: str
    seeds: tuple[int, ...]
    cases: tuple[str, ...]
    lesions: dict[str, list[tuple[int, float, float]]]  # picai_eval lesion results
    target: dict[str, int]
    prediction: dict[str, float]
    dice: dict[str, float | None]

    @classmethod
    def from_runs(cls, name: str, runs: Sequence[dict]) -> PooledArm:
        """From run records (`{"seed": k, "cases": {case: {"target", "prediction", "dice", "lesions"}}}`)."""
        cases = tuple(sorted(runs[0]["cases"]))
        for run in runs:
            if tuple(sorted(run["cases"])) != cases:
                raise ValueError(f"{name}: seed {run['seed']} was scored on other cases than seed {runs[0]['seed']}")
        lesions, target, prediction, dice = {}, {}, {}, {}
        for run in runs:
            for case, r in run["cases"].items():
                key = f"{run['seed']}/{case}"
                lesions[key] = [(int(a), float(b), float(c)) for a, b, c in r["lesions"]]
                target[key], prediction[key], dice[key] = int(r["target"]), float(r["prediction"]), r["dice"]
        return cls(name, tuple(run["seed"] for run in runs), cases, lesions, target, prediction, dice)

    def keys(self, seeds: Sequence[int] | None = None, cases: Sequence[str] | None = None) -> list[str]:
        return [f"{s}/{c}" for s in (self.seeds if seeds is None else seeds)
                for c in (self.cases if cases is None else cases)]


# ---------------------------------------------------------------------------------------------------------
# Endpoints of a pooled arm over a list of "<seed>/<case>" keys (repeats allowed: a bootstrap resample)
# ---------------------------------------------------------------------------------------------------------

def fp_per_case(arm: PooledArm, keys: Sequence[str]) -> float:
    """False-positive candidates per case with every candidate kept."""
    return float(np.mean([sum(1 for e in arm.lesions[k] if not e[0] and e[1] > 0) for k in keys]))


def sensitivity(arm: PooledArm, keys: Sequence[str]) -> float:
    """Share of lesions matched by some candidate (every candidate kept); nan without lesions."""
    found = [e[1] > 0 for k in keys for e in arm.lesions[k] if e[0]]
    return float(np.mean(found)) if found else math.nan


def max_sensitivity(arm: PooledArm, keys: Sequence[str]) -> float:
    froc = froc_from_lesion_results(arm.lesions, keys)
    return float(np.nanmax(froc.sensitivity, initial=0.0)) if froc.num_lesions else 0.0


def fp_at_sensitivity(arm: PooledArm, keys: Sequence[str], level: float) -> float:
    """FP/case at the FROC's first operating point with lesion sensitivity >= level (0 at level 0)."""
    if level <= 0:
        return 0.0
    value = froc_from_lesion_results(arm.lesions, keys).fp_per_case_at(level)
    return math.nan if value is None else float(value)


def matched_level(a: PooledArm, b: PooledArm, keys: Sequence[str], target: float = MATCHED_SENSITIVITY) -> float:
    """The matched lesion sensitivity: `target`, or the highest sensitivity both arms reach on `keys` if lower."""
    return min(target, max_sensitivity(a, keys), max_sensitivity(b, keys))


def auroc(arm: PooledArm, keys: Sequence[str]) -> float:
    """Patient AUROC from the likelihoods (each seed's prediction of a case counts as one patient): the share of
    (positive, negative) pairs ranked right, ties half, which is sklearn's / picai_eval's ROC area (tested)."""
    y = np.array([arm.target[k] for k in keys], dtype=bool)
    p = np.array([arm.prediction[k] for k in keys], dtype=float)
    pos, neg = p[y], p[~y]
    if not len(pos) or not len(neg):
        return math.nan
    right = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(right / (len(pos) * len(neg)))


def average_precision(arm: PooledArm, keys: Sequence[str]) -> float:
    """picai_eval's lesion-level AP (sklearn's precision-recall steps, precision 0 at confidence 0, where the
    missed lesions sit), computed directly: picai_eval's own call costs ~50 ms, too slow for 2,000 resamples
    (tests check that both agree)."""
    entries = [e for k in keys for e in arm.lesions[k]]
    y = np.array([e[0] for e in entries], dtype=bool)
    if not y.any():
        return math.nan
    conf = np.array([e[1] for e in entries], dtype=float)
    order = np.argsort(-conf, kind="stable")
    y, conf = y[order], conf[order]
    last = np.r_[np.flatnonzero(np.diff(conf)), len(conf) - 1]  # the last entry of each distinct confidence
    tps, fps = np.cumsum(y)[last], np.cumsum(~y)[last]
    precision = np.where(conf[last] > 0, tps / (tps + fps), 0.0)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def lesion_dice(arm: PooledArm, keys: Sequence[str]) -> float:
    values = [arm.dice[k] for k in keys if arm.dice[k] is not None]
    return float(np.mean(values)) if values else math.nan


ENDPOINTS: dict[str, Callable[[PooledArm, Sequence[str]], float]] = {
    "fp_per_case": fp_per_case, "auroc": auroc, "ap": average_precision, "lesion_dice": lesion_dice}


# ---------------------------------------------------------------------------------------------------------
# Two-level bootstrap over training seeds and test cases
# ---------------------------------------------------------------------------------------------------------

def resamples(seeds: Sequence[int], cases: Sequence[str], targets: Sequence[int], n: int,
              rng_seed: int) -> list[tuple[list[int], list[str]]]:
    """`n` resamples (seeds, cases): the seeds drawn with replacement, then the cases drawn with replacement
    once per resample and used for every drawn seed (all seeds are scored on the same cases, so a case's
    difficulty is shared across seeds). Case draws without both a positive and a negative are redrawn."""
    rng = np.random.default_rng(rng_seed)
    targets = np.asarray(targets)
    out = []
    while len(out) < n:
        s = [seeds[i] for i in rng.integers(0, len(seeds), len(seeds))]
        idx = rng.integers(0, len(cases), len(cases))
        if len(set(targets.tolist())) == 2 and targets[idx].min() == targets[idx].max():
            continue
        out.append((s, [cases[i] for i in idx]))
    return out


def percentile_ci(values: Sequence[float], level: float) -> list[float] | None:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if not len(v):
        return None
    tail = (1 - level) / 2 * 100
    return [float(x) for x in np.percentile(v, [tail, 100 - tail])]


@dataclass(frozen=True)
class Comparison:
    """treatment - control on paired resamples: the primary endpoint (FP/case at matched sensitivity) and the
    secondary ones, each with its point estimate and percentile CI."""

    treatment: str
    control: str
    seeds: tuple[int, ...]
    matched_sensitivity: float
    primary: dict  # {"treatment", "control", "delta", "ci"}
    secondary: dict[str, dict]  # endpoint -> {"treatment", "control", "delta", "ci"}
    resamples: int
    primary_ci_level: float
    secondary_ci_level: float


def _matched_fp(t: PooledArm, c: PooledArm, keys: Sequence[str], target: float) -> tuple[float, float, float]:
    level = matched_level(t, c, keys, target)
    return level, fp_at_sensitivity(t, keys, level), fp_at_sensitivity(c, keys, level)


def compare(treatment: PooledArm, control: PooledArm, n_resamples: int = 2000, rng_seed: int = 0,
            primary_ci_level: float = PRIMARY_CI_LEVEL, secondary_ci_level: float = SECONDARY_CI_LEVEL,
            target_sensitivity: float = MATCHED_SENSITIVITY) -> Comparison:
    """Pooled over the seeds both arms ran; paired: both arms see the same resampled seeds and cases."""
    if treatment.cases != control.cases:
        raise ValueError(f"{treatment.name} and {control.name} were scored on different cases")
    seeds = tuple(s for s in treatment.seeds if s in control.seeds)
    if not seeds:
        raise ValueError(f"{treatment.name} and {control.name} share no training seed")
    cases = treatment.cases
    keys = treatment.keys(seeds)
    level, fp_t, fp_c = _matched_fp(treatment, control, keys, target_sensitivity)
    point = {name: (f(treatment, keys), f(control, keys)) for name, f in ENDPOINTS.items()}
    targets = [treatment.target[f"{seeds[0]}/{c}"] for c in cases]
    deltas: dict[str, list[float]] = {"primary": [], **{name: [] for name in ENDPOINTS}}
    for s, cs in resamples(seeds, cases, targets, n_resamples, rng_seed):
        k = treatment.keys(s, cs)
        _, a, b = _matched_fp(treatment, control, k, target_sensitivity)
        deltas["primary"].append(a - b)
        for name, f in ENDPOINTS.items():
            deltas[name].append(f(treatment, k) - f(control, k))

    def entry(t: float, c: float, ds: list[float], level: float) -> dict:
        return {"treatment": t, "control": c, "delta": t - c, "ci": percentile_ci(ds, level)}

    return Comparison(treatment.name, control.name, seeds, level,
                      entry(fp_t, fp_c, deltas["primary"], primary_ci_level),
                      {name: entry(*point[name], deltas[name], secondary_ci_level) for name in ENDPOINTS},
                      n_resamples, primary_ci_level, secondary_ci_level)


def verdict(comparison: Comparison | None) -> str:
    """The pre-registered decision rule: supported when the primary CI lies entirely below 0 (fewer FPs)."""
    if comparison is None:
        return "pending"
    ci = comparison.primary["ci"]
    if ci is None:
        return "not decidable"
    return "supported" if ci[1] < 0 else "not supported"


def arm_summary(arm: PooledArm, n_resamples: int = 1000, rng_seed: int = 0, level: float = SECONDARY_CI_LEVEL,
                target_sensitivity: float = MATCHED_SENSITIVITY) -> dict:
    """One arm pooled over its seeds: each endpoint with a two-level bootstrap CI, plus FP/case at the target
    sensitivity (nan in a resample that does not reach it)."""
    endpoints = {**ENDPOINTS, "fp_at_target": lambda a, k: fp_at_sensitivity(a, k, target_sensitivity)}
    keys = arm.keys()
    targets = [arm.target[f"{arm.seeds[0]}/{c}"] for c in arm.cases]
    values: dict[str, list[float]] = {name: [] for name in endpoints}
    for s, cs in resamples(arm.seeds, arm.cases, targets, n_resamples, rng_seed):
        k = arm.keys(s, cs)
        for name, f in endpoints.items():
            values[name].append(f(arm, k))
    return {name: {"value": f(arm, keys), "ci": percentile_ci(values[name], level)} for name, f in endpoints.items()}
