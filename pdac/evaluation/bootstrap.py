"""Bootstrap over cases: 95% confidence intervals per detection set and paired p-values between sets."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from pdac.evaluation.metrics import SetResult


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

