"""`pdac bench --precision-equivalence`: the pipeline in fp32 against bf16 on the same scans and weights.

Held-out phantoms (seed 19 by default: not the training seed 1, not the recorded held-out seed 2, not the
quality test's seed 3), half with a PDAC, plus optional scans without labels (real CT). Both pipelines are
loaded once in this process and run case by case, interleaved. Per case: the likelihoods, the Dice of the two
detection maps' supports, the lesion candidates matched one to one by IoU >= 0.1 (PANORAMA's matching
criterion) and whether stage 1 gave the same crop. On the phantoms, AUROC and AP of each precision
(picai_eval through `pdac.evaluation`) and the paired bootstrap of the difference (bf16 - fp32).

Verdict: bf16 is equivalent when every case is within the tolerance this project already uses to call two
pipelines the same (`tests/test_optimised_vs_reference.py`: likelihoods within 0.02 and map Dice >= 0.9), the
candidates all match, and the bootstrap CIs of the AUROC and AP differences contain 0.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from pdac.config import load_config

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16")
MIN_IOU = 0.1
LIKELIHOOD_TOLERANCE = 0.02
MAP_DICE_TOLERANCE = 0.9
HELDOUT_SEED = 19


@dataclass(frozen=True)
class EquivalenceSettings:
    cases: int = 40
    seed: int = HELDOUT_SEED
    scans: tuple[str, ...] = ()  # extra scans without labels (real CT)
    weights: str | None = None
    bootstrap: int = 1000
    work: str | None = None  # where the phantoms go (reused when present); default: a temporary folder


def support_dice(a: np.ndarray, b: np.ndarray) -> float | None:
    """Dice of the two maps' supports (> 0); None when both are empty (nothing to compare)."""
    sa, sb = a > 0, b > 0
    total = int(sa.sum() + sb.sum())
    return None if total == 0 else 2.0 * int(np.count_nonzero(sa & sb)) / total


def match_candidates(a: np.ndarray, b: np.ndarray, min_iou: float = MIN_IOU) -> dict:
    """Lesion candidates (connected components of map > 0, 26-connected as in the lesion list) of `a` and `b`
    paired one to one, greedily by decreasing IoU, when IoU >= `min_iou`. Returns the counts and, per pair,
    the IoU and both candidates' values."""
    structure = np.ones((3, 3, 3))
    la, na = ndimage.label(a > 0, structure=structure)
    lb, nb = ndimage.label(b > 0, structure=structure)
    pairs = []
    if na and nb:
        both = (la > 0) & (lb > 0)
        overlap = np.zeros((na + 1, nb + 1), dtype=np.int64)
        np.add.at(overlap, (la[both], lb[both]), 1)
        size_a = np.bincount(la.ravel(), minlength=na + 1)
        size_b = np.bincount(lb.ravel(), minlength=nb + 1)
        ia, ib = np.nonzero(overlap)
        iou = overlap[ia, ib] / (size_a[ia] + size_b[ib] - overlap[ia, ib])
        used_a, used_b = set(), set()
        for k in np.argsort(-iou, kind="stable"):
            i, j = int(ia[k]), int(ib[k])
            if iou[k] < min_iou or i in used_a or j in used_b:
                continue
            used_a.add(i)
            used_b.add(j)
            pairs.append({"iou": float(iou[k]), "a": float(a[la == i].max()), "b": float(b[lb == j].max())})
    return {"a": int(na), "b": int(nb), "matched": len(pairs), "pairs": pairs}


def compare_case(fp32, bf16) -> dict:
    """Agreement of two `pdac.infer.pipeline.CaseResult`s of the same scan."""
    a, b = (sitk.GetArrayViewFromImage(r.detection_map) for r in (fp32, bf16))
    matches = match_candidates(a, b)
    return {
        "likelihood_fp32": fp32.likelihood,
        "likelihood_bf16": bf16.likelihood,
        "likelihood_diff": abs(bf16.likelihood - fp32.likelihood),
        "map_dice": support_dice(a, b),
        "candidates_fp32": matches["a"],
        "candidates_bf16": matches["b"],
        "candidates_matched": matches["matched"],
        "matched_candidate_max_diff": max((abs(p["a"] - p["b"]) for p in matches["pairs"]), default=0.0),
        "same_crop": fp32.crop == bf16.crop,
        "seconds_fp32": fp32.seconds,
        "seconds_bf16": bf16.seconds,
    }


def within_tolerance(c: dict) -> bool:
    return (c["likelihood_diff"] <= LIKELIHOOD_TOLERANCE
            and (c["map_dice"] is None or c["map_dice"] >= MAP_DICE_TOLERANCE)
            and c["candidates_matched"] == c["candidates_fp32"] == c["candidates_bf16"])


def summarize(per_case: dict[str, dict]) -> dict:
    """Aggregate agreement over cases (likelihood differences, Dice, candidates, crops, time)."""
    values = list(per_case.values())
    diffs = [c["likelihood_diff"] for c in values]
    dices = [c["map_dice"] for c in values if c["map_dice"] is not None]
    n_fp32, n_bf16 = sum(c["candidates_fp32"] for c in values), sum(c["candidates_bf16"] for c in values)
    matched = sum(c["candidates_matched"] for c in values)
    total = {p: sum(sum(c[f"seconds_{p}"].values()) for c in values) for p in PRECISIONS}
    return {
        "cases": len(values),
        "likelihood_diff_max": max(diffs),
        "likelihood_diff_median": statistics.median(diffs),
        "map_dice_min": min(dices, default=None),
        "map_dice_mean": float(np.mean(dices)) if dices else None,
        "cases_both_maps_empty": len(values) - len(dices),
        "candidates_fp32": n_fp32,
        "candidates_bf16": n_bf16,
        "candidates_matched": matched,
        "candidate_agreement": 1.0 if n_fp32 + n_bf16 == 0 else 2 * matched / (n_fp32 + n_bf16),
        "matched_candidate_max_diff": max(c["matched_candidate_max_diff"] for c in values),
        "same_crop": sum(c["same_crop"] for c in values),
        "within_tolerance": sum(within_tolerance(c) for c in values),
        "seconds_fp32": total["fp32"],
        "seconds_bf16": total["bf16"],
    }


def _phantoms(folder: Path, n: int, seed: int) -> tuple[list[Path], Path]:
    from pdac.lab.phantom import generate_dataset

    if not (folder / "truth.json").exists():
        generate_dataset(folder, n, seed, positive_fraction=0.5, previews=0, workers=1, prefix="eq")
    scans = sorted((folder / "imagesTr").glob("*_0000.nii.gz"))
    if len(scans) != n:
        from pdac.errors import UsageError

        raise UsageError(f"{folder}: holds {len(scans)} phantoms, not {n} (use another --work folder)")
    return scans, folder / "labelsTr"


def _run_both(pipelines: dict, scan_path: Path) -> tuple[dict, dict]:
    from pdac.infer.io import case_id, read_image

    scan = read_image(scan_path)
    results = {p: pipelines[p].run(scan, case_id(scan_path)) for p in PRECISIONS}
    return results, compare_case(results["fp32"], results["bf16"])


def run_precision_equivalence(s: EquivalenceSettings) -> tuple[dict, list[str]]:
    """fp32 vs bf16 on held-out phantoms and extra scans; returns (everything measured, report lines)."""
    from pdac.evaluation.bootstrap import bootstrap
    from pdac.evaluation.metrics import evaluate_arrays
    from pdac.infer.io import case_id
    from pdac.infer.pipeline import Pipeline

    pipelines = {p: Pipeline(load_config(overrides={"runtime": {"precision": p}}), s.weights) for p in PRECISIONS}
    with tempfile.TemporaryDirectory(prefix="pdac-precision-") as tmp:
        scans, label_dir = _phantoms(Path(s.work) if s.work else Path(tmp) / "phantoms", s.cases, s.seed)
        maps: dict[str, dict[str, np.ndarray]] = {p: {} for p in PRECISIONS}
        likelihoods: dict[str, dict[str, float]] = {p: {} for p in PRECISIONS}
        labels, per_case = {}, {}
        t0 = time.perf_counter()
        for i, path in enumerate(scans, start=1):
            case = case_id(path)
            results, per_case[case] = _run_both(pipelines, path)
            for p in PRECISIONS:
                maps[p][case] = sitk.GetArrayFromImage(results[p].detection_map)
                likelihoods[p][case] = results[p].likelihood
            labels[case] = sitk.GetArrayFromImage(sitk.ReadImage(str(label_dir / f"{case}.nii.gz")))
            log.info("%d/%d %s: likelihood fp32 %.4f bf16 %.4f, map Dice %s", i, len(scans), case,
                     likelihoods["fp32"][case], likelihoods["bf16"][case], per_case[case]["map_dice"])
    sets = [evaluate_arrays(maps[p], labels, likelihoods[p], name=p) for p in PRECISIONS]
    del maps, labels
    boot = bootstrap(sets, n=s.bootstrap, seed=0)
    comparison = boot["comparisons"][0]
    phantoms = {
        "seed": s.seed,
        "positives": sum(sets[0].metrics.case_target.values()),
        **summarize(per_case),
        "auroc": {p: r.auroc for p, r in zip(PRECISIONS, sets, strict=True)},
        "ap": {p: r.ap for p, r in zip(PRECISIONS, sets, strict=True)},
        "delta_auroc": comparison["delta_auroc"], "delta_auroc_ci": comparison["delta_auroc_ci"],
        "p_auroc": comparison["p_auroc"],
        "delta_ap": comparison["delta_ap"], "delta_ap_ci": comparison["delta_ap_ci"], "p_ap": comparison["p_ap"],
        "bootstrap_resamples": boot["n_resamples"],
        "per_case": per_case,
    }
    extra = {}
    for path in map(Path, s.scans):
        _, extra[case_id(path)] = _run_both(pipelines, path)
    verdict = equivalent(phantoms, extra)
    results = {"phantoms": phantoms, "scans": extra, "equivalent": verdict,
               "tolerance": {"likelihood": LIKELIHOOD_TOLERANCE, "map_dice": MAP_DICE_TOLERANCE, "min_iou": MIN_IOU},
               "precision_used": pipelines["bf16"].precision, "seconds": time.perf_counter() - t0}
    return results, report_lines(results)


def _ci_contains_zero(ci) -> bool:
    return ci is None or ci[0] <= 0 <= ci[1]


def equivalent(phantoms: dict, scans: dict) -> bool:
    return (phantoms["within_tolerance"] == phantoms["cases"]
            and all(within_tolerance(c) for c in scans.values())
            and _ci_contains_zero(phantoms["delta_auroc_ci"]) and _ci_contains_zero(phantoms["delta_ap_ci"]))


def _ci(ci) -> str:
    return "n/a" if ci is None else f"[{ci[0]:+.4f}, {ci[1]:+.4f}]"


def report_lines(r: dict) -> list[str]:
    ph = r["phantoms"]
    lines = [
        f"phantoms: {ph['cases']} (seed {ph['seed']}, {ph['positives']} with PDAC); fp32 vs bf16",
        f"  likelihood |diff|: max {ph['likelihood_diff_max']:.4f}, median {ph['likelihood_diff_median']:.5f}",
        f"  AUROC fp32 {ph['auroc']['fp32']:.4f} bf16 {ph['auroc']['bf16']:.4f}, "
        f"diff {ph['delta_auroc']:+.4f} 95% CI {_ci(ph['delta_auroc_ci'])}",
        f"  AP    fp32 {ph['ap']['fp32']:.4f} bf16 {ph['ap']['bf16']:.4f}, "
        f"diff {ph['delta_ap']:+.4f} 95% CI {_ci(ph['delta_ap_ci'])} ({ph['bootstrap_resamples']} paired resamples)",
        f"  candidates: fp32 {ph['candidates_fp32']}, bf16 {ph['candidates_bf16']}, matched (IoU >= {MIN_IOU}) "
        f"{ph['candidates_matched']}; agreement {ph['candidate_agreement']:.3f}; matched value |diff| max "
        f"{ph['matched_candidate_max_diff']:.4f}",
        f"  map Dice: min {_num(ph['map_dice_min'])}, mean {_num(ph['map_dice_mean'])} "
        f"({ph['cases_both_maps_empty']} cases with both maps empty); "
        f"same stage-1 crop {ph['same_crop']}/{ph['cases']}",
        f"  within tolerance: {ph['within_tolerance']}/{ph['cases']}; pipeline time fp32 {ph['seconds_fp32']:.0f} s, "
        f"bf16 {ph['seconds_bf16']:.0f} s",
    ]
    for name, c in r["scans"].items():
        lines.append(f"{name}: likelihood fp32 {c['likelihood_fp32']:.4f} bf16 {c['likelihood_bf16']:.4f}; "
                     f"map Dice {_num(c['map_dice'])}; candidates {c['candidates_fp32']}/{c['candidates_bf16']}, "
                     f"matched {c['candidates_matched']}; same crop {c['same_crop']}")
    lines.append(f"equivalent={r['equivalent']} (bf16 as run: {r['precision_used']})")
    return lines


def _num(v) -> str:
    return "n/a" if v is None else f"{v:.4f}"
