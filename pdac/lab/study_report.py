"""The study's report, written only from the run records (docs/study/runs/*.json) and the protocol.

README.md: the pre-registered verdicts, the pooled comparisons with their two-level bootstrap CIs, per-seed
results, every arm pooled, learning curves, an exploratory comparison of each arm's first seed against CE
(`pdac evaluate`'s comparison: metrics.json, summary.md, roc/pr/froc.png), timings, versions and the command.
Everything after the HAND_WRITTEN marker in an existing README.md is kept.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np

from pdac.lab import study_stats
from pdac.lab.study_stats import MATCHED_SENSITIVITY, Comparison, PooledArm

HAND_WRITTEN = "<!-- hand-written notes below: kept when the report is regenerated -->"
CURVES_PNG = "learning_curves.png"
ENDPOINT_NAMES = {"fp_per_case": "FP/case, all candidates", "auroc": "AUROC", "ap": "AP",
                  "lesion_dice": "lesion Dice", "fp_at_target": f"FP/case @ {MATCHED_SENSITIVITY:.0%} sensitivity"}


def _num(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{round(v, digits) + 0.0:.{digits}f}"


def _ci(v, ci, digits: int = 3) -> str:
    return f"{_num(v, digits)} [{_num(ci[0], digits)}, {_num(ci[1], digits)}]" if ci else _num(v, digits)


def _signed(v, ci=None, digits: int = 3) -> str:
    if v is None or not math.isfinite(v):
        return "n/a"
    text = f"{v:+.{digits}f}"
    return f"{text} [{ci[0]:+.{digits}f}, {ci[1]:+.{digits}f}]" if ci else text


# ---------------------------------------------------------------------------------------------------------
# Exploratory: every arm's first seed against CE, as `pdac evaluate` compares detection sets
# ---------------------------------------------------------------------------------------------------------

def set_result(run: dict, name: str):
    """A run record as `pdac evaluate`'s SetResult (picai_eval Metrics from the stored lesion results)."""
    from picai_eval import Metrics

    from pdac.evaluation.metrics import CaseEvaluation, SetResult

    cases = {c: CaseEvaluation([tuple(e) for e in r["lesions"]], r["map_max"], r["dice"], r["num_candidates"])
             for c, r in sorted(run["cases"].items())}
    metrics = Metrics(lesion_results={c: r.lesion_results for c, r in cases.items()},
                      case_target={c: int(run["cases"][c]["target"]) for c in cases},
                      case_pred={c: float(run["cases"][c]["prediction"]) for c in cases})
    return SetResult(name, metrics, cases, "likelihoods")


def fp_at_matched_sensitivity(a: dict, b: dict,
                              target: float = MATCHED_SENSITIVITY) -> tuple[float, float, float] | None:
    """(sensitivity, FP/case of a, FP/case of b) read off two sets' FROC curves at `target` lesion sensitivity
    or, when one set never reaches it, at the highest sensitivity both reach; None when one finds no lesion."""
    def curve(s: dict) -> tuple[np.ndarray, np.ndarray]:
        return (np.asarray(s["froc"]["sensitivity"], dtype=float), np.asarray(s["froc"]["fp_per_case"], dtype=float))

    reach = min(float(np.nanmax(curve(s)[0], initial=0.0)) for s in (a, b))
    sensitivity = min(target, reach)
    if sensitivity <= 0:
        return None

    def fp_at(s: dict) -> float:
        sens, fp = curve(s)
        return float(fp[sens >= sensitivity - 1e-12].min())

    return sensitivity, fp_at(a), fp_at(b)


METRIC_NAMES = {"auroc": "AUROC", "ap": "AP", "fp_per_case": "FP/case"}


def _p(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def conclusion(data: dict) -> str:
    """A conclusion written only from the measured numbers (CE is the first set, the reference)."""
    ce = data["sets"][0]
    sets = {s["name"]: s for s in data["sets"]}
    lines, fewer, more, fewer_matched = [], [], [], []
    for comp in data.get("comparisons", []):
        other = sets[comp["set"]]
        matched = fp_at_matched_sensitivity(ce, other)
        matched_txt = ("no lesion found by one of them" if matched is None else
                       f"at {matched[0]:.0%} lesion sensitivity {matched[2]:.2f} vs {matched[1]:.2f} FP/case")
        if matched is not None and matched[2] < matched[1]:
            fewer_matched.append(comp["set"])
        p_fp = comp.get("p_fp_per_case")
        if p_fp is not None and p_fp < 0.05:
            (fewer if comp["delta_fp_per_case"] < 0 else more).append(comp["set"])
        sig = [m for m in ("auroc", "ap", "fp_per_case") if comp.get(f"p_{m}") is not None and comp[f"p_{m}"] < 0.05]
        lines.append(f"- {comp['set']} vs {ce['name']}: AUROC {_signed(comp.get('delta_auroc'))} "
                     f"(p = {_p(comp.get('p_auroc'))}), AP {_signed(comp.get('delta_ap'))} "
                     f"(p = {_p(comp.get('p_ap'))}); false-positive candidates per case "
                     f"{_num(other.get('fp_per_case'), 2)} vs {_num(ce.get('fp_per_case'), 2)} "
                     f"(p = {_p(p_fp)}); {matched_txt}. "
                     + (f"Significant at 0.05: {', '.join(METRIC_NAMES[m] for m in sig)}." if sig
                        else "No significant difference at 0.05."))
    lines.append("")
    answer = []
    if fewer:
        answer.append(f"significantly fewer false-positive candidates per case than CE: {', '.join(fewer)}")
    if more:
        answer.append(f"significantly more than CE: {', '.join(more)}")
    if not fewer and not more:
        answer.append("no Tversky-family loss changed the false-positive candidates per case significantly "
                      "(paired bootstrap, 0.05)")
    answer.append("fewer FP/case than CE at matched lesion sensitivity: "
                  + (", ".join(fewer_matched) if fewer_matched else "none"))
    lines.append("Answer on this data: " + "; ".join(answer) + ".")
    return "\n".join(lines)


def exploratory_comparison(first_seed_runs: list[tuple[str, dict]], out: Path, n_bootstrap: int,
                           seed: int) -> tuple[str, str]:
    """`pdac evaluate`'s comparison of the arms' first-seed runs (the first one the reference) into `out`.

    Returns the reference's title (CE, or the first arm when no CE run is recorded) and the section's text."""
    from pdac.evaluation.report import build_report
    from pdac.evaluation.report import write_report as write_evaluation

    report = build_report([set_result(run, name) for name, run in first_seed_runs], "held-out test cases",
                          n_bootstrap, seed)
    write_evaluation(report, out)
    text = report.summary.replace("# PANORAMA evaluation", "### Held-out evaluation", 1)
    reference, reference_run = first_seed_runs[0]
    if reference_run["arm"] != "ce":
        return f"{reference} (no CE run recorded)", text
    if len(first_seed_runs) > 1:
        text += "\n#### Measured differences against CE\n\n" + conclusion(report.data) + "\n"
    return reference, text


# ---------------------------------------------------------------------------------------------------------
# Learning curves
# ---------------------------------------------------------------------------------------------------------

def plot_learning_curves(curves: dict[str, list[dict]], path: Path) -> bool:
    """FP/case and lesion sensitivity (every candidate kept) against training iterations, one line per arm."""
    from matplotlib.figure import Figure

    if not any(curves.values()):
        return False
    fig = Figure(figsize=(11, 4.5))
    ax_fp, ax_sens = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for name, points in curves.items():
        if not points:
            continue
        its = [p["iterations"] for p in points]
        ax_fp.plot(its, [p["fp_per_case"] for p in points], marker="o", ms=3, label=name)
        ax_sens.plot(its, [p["sensitivity"] for p in points], marker="o", ms=3, label=name)
    n_cases = max(p["cases"] for points in curves.values() for p in points)
    ax_fp.set(xlabel="training iterations", ylabel="false-positive candidates per case",
              title=f"FP/case (every candidate kept), {n_cases} held-out cases")
    ax_sens.set(xlabel="training iterations", ylabel="lesion sensitivity", ylim=(-0.02, 1.02),
                title="Lesion sensitivity (every candidate kept)")
    for ax in (ax_fp, ax_sens):
        ax.grid(alpha=0.3)
    ax_sens.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True


# ---------------------------------------------------------------------------------------------------------
# README
# ---------------------------------------------------------------------------------------------------------

def hypotheses_section(hypotheses, comparisons: dict[str, Comparison | None], progress: dict[str, str]) -> str:
    rows = []
    for h in hypotheses:
        c = comparisons.get(h.key)
        if c is None:
            rows.append(f"| {h.key} | {h.statement} | {progress[h.key]} | | | | **pending** |")
            continue
        p = c.primary
        level = f"{c.matched_sensitivity:.0%}" + (" (an arm finds no lesion)" if c.matched_sensitivity == 0 else "")
        rows.append(f"| {h.key} | {h.statement} | {', '.join(map(str, c.seeds))} | {level} | "
                    f"{_num(p['treatment'])} vs {_num(p['control'])} | {_signed(p['delta'], p['ci'])} | "
                    f"**{study_stats.verdict(c)}** |")
    level = next((c.primary_ci_level for c in comparisons.values() if c), study_stats.PRIMARY_CI_LEVEL)
    return (f"| | hypothesis | seeds | matched sensitivity | FP/case (treatment vs control) | "
            f"Δ FP/case [{level:.1%} CI] | verdict |\n|---|---|---|---|---|---|---|\n" + "\n".join(rows))


def secondary_section(comparisons: dict[str, Comparison | None]) -> str:
    lines = []
    for key, c in comparisons.items():
        if c is None:
            continue
        lines.append(f"| {key}: {c.treatment} vs {c.control} | "
                     + " | ".join(_signed(c.secondary[e]["delta"], c.secondary[e]["ci"])
                                  for e in ("fp_per_case", "auroc", "ap", "lesion_dice")) + " |")
    if not lines:
        return "No pre-registered comparison is complete yet."
    level = next(c.secondary_ci_level for c in comparisons.values() if c)
    return (f"Secondary endpoints (descriptive, {level:.0%} CIs, same resamples):\n\n"
            "| comparison | Δ FP/case, all candidates | Δ AUROC | Δ AP | Δ lesion Dice |\n|---|---|---|---|---|\n"
            + "\n".join(lines))


def per_seed_section(runs: Sequence[dict], hypotheses) -> str:
    rows = []
    for run in runs:
        m, s = run["metrics"], run["seconds"]
        train = f"{s['train'] / 60:.1f}" if s.get("train") else "resumed"
        rows.append(f"| {run['name']} | {run['seed']} | {_num(m['auroc'])} | {_num(m['ap'])} | "
                    f"{_num(m['fp_per_case'], 2)} | {_num(m['fp_per_case_at_sensitivity'].get('0.8'), 2)} | "
                    f"{_num(m['dice_mean_positive'])} | {train} |")
    by = {(r["arm"], r["seed"]): r for r in runs}
    deltas = []
    for h in hypotheses:
        for seed in sorted({r["seed"] for r in runs}):
            t, c = by.get((h.treatment, seed)), by.get((h.control, seed))
            if t and c:
                pair = (PooledArm.from_runs(t["name"], [t]), PooledArm.from_runs(c["name"], [c]))
                keys = pair[0].keys()
                level = study_stats.matched_level(*pair, keys)
                fp_t, fp_c = (study_stats.fp_at_sensitivity(a, keys, level) for a in pair)
                deltas.append(f"{h.key} seed {seed}: {fp_t:.2f} vs {fp_c:.2f} FP/case at {level:.0%} "
                              f"sensitivity (Δ {fp_t - fp_c:+.2f})")
    return ("| arm | seed | AUROC | AP | FP/case, all candidates | FP/case @ 80% sensitivity | lesion Dice | "
            "training min |\n|---|---|---|---|---|---|---|---|\n" + "\n".join(rows)
            + ("\n\nPrimary endpoint per seed (point estimates): " + "; ".join(deltas) + "." if deltas else ""))


def pooled_section(summaries: dict[str, dict], seeds: dict[str, tuple[int, ...]]) -> str:
    keys = ("fp_at_target", "fp_per_case", "auroc", "ap", "lesion_dice")
    rows = [f"| {name} | {', '.join(map(str, seeds[name]))} | "
            + " | ".join(_ci(s[k]["value"], s[k]["ci"]) for k in keys) + " |" for name, s in summaries.items()]
    return ("| arm | seeds | " + " | ".join(ENDPOINT_NAMES[k] for k in keys) + " |\n|---|---|"
            + "---|" * len(keys) + "\n" + "\n".join(rows))


def _timings(runs: Sequence[dict]) -> str:
    def minutes(key: str, rs) -> str:
        values = [r["seconds"][key] for r in rs if r["seconds"].get(key)]
        return f"{np.median(values) / 60:.1f} min (median of {len(values)})" if values else "n/a"

    curve_runs = [r for r in runs if r.get("curve")]
    return (f"Per run: training {minutes('train', runs)}, detection {minutes('detect', runs)}, scoring "
            f"{minutes('evaluate', runs)}; the learning curve added {minutes('curve', curve_runs)} to each of "
            f"the {len(curve_runs)} runs that have one.")


def readme(record: dict, sections: dict[str, str], previous: str | None) -> str:
    kind = "synthetic phantoms" if record["synthetic"] else "PANORAMA data"
    s = record["settings"]
    tail = ""
    if previous and HAND_WRITTEN in previous:
        tail = previous[previous.index(HAND_WRITTEN):]
    hardware = ", ".join(f"{k} {v}" for k, v in record["hardware"].items())
    return f"""# Study: does the FP-heavy Tversky weighting cut false positives? ({kind})

{"**Synthetic results** on procedural phantoms; they do not transfer to patients." if record["synthetic"] else ""}

Protocol (pre-registered before any of these runs): [PROTOCOL.md](PROTOCOL.md). Status: **{record['status']}**.
Each arm x training seed: the stage-2 lesion model trained with identical data ({s['n_train']} training cases,
seed {s['train_seed']}), fold {s['fold']}, {s['epochs']} epochs x {s['iterations']} iterations, optimiser
{s['optimizer']}, tiny ResEnc plans, its final checkpoint; the same stage-1 pancreas model for all; the full
detection pipeline on {s['n_test']} held-out cases (seed {s['test_seed']}); picai_eval, IoU >= 0.1 on label 1.
{record.get('benchmark_text', '')}
## Pre-registered hypotheses (primary endpoint: FP/case at matched lesion sensitivity)

{sections['hypotheses']}

Pooled over the seeds both arms ran and paired over cases; CI from {s['n_bootstrap']} two-level bootstrap
resamples (seeds, then cases; PROTOCOL.md), {record['primary_ci_level']:.1%} for the two primary hypotheses
(Bonferroni). Supported = the whole CI below 0.

{sections['secondary']}

## Per seed

{sections['per_seed']}

## Every arm, pooled over its seeds (95% CIs, two-level bootstrap)

{sections['pooled']}

## Learning curves

{sections['curves']}

## Exploratory (not pre-registered): each arm's first seed against {sections['reference']}

{sections['exploratory']}

## Reproduce

```bash
{record['command']}
```

Runs: `runs/<arm>__seed<k>.json` (one per arm x seed, written as each finishes). {sections['timings']}
This invocation: {record['minutes']} min. Hardware: {hardware}.
Versions: {", ".join(f"{k} {v}" for k, v in record["versions"].items())}.

{tail or HAND_WRITTEN}
"""


def write_report(out: Path, record: dict, hypotheses, arm_names: dict[str, str], runs: list[dict],
                 complete: dict[str, bool], progress: dict[str, str], n_bootstrap: int, bootstrap_seed: int) -> dict:
    """Statistics and README from the finished runs; returns what study.json records about the comparisons."""
    order = list(arm_names)
    runs = sorted(runs, key=lambda r: (order.index(r["arm"]), r["seed"]))
    by_arm: dict[str, list[dict]] = {}
    for run in runs:
        by_arm.setdefault(run["arm"], []).append(run)
    pooled = {arm: PooledArm.from_runs(arm_names[arm], sorted(rs, key=lambda r: r["seed"]))
              for arm, rs in by_arm.items()}
    comparisons: dict[str, Comparison | None] = {}
    for h in hypotheses:
        ready = complete[h.key] and h.treatment in pooled and h.control in pooled
        comparisons[h.key] = (study_stats.compare(pooled[h.treatment], pooled[h.control], n_bootstrap,
                                                  bootstrap_seed) if ready else None)
    summaries = {p.name: study_stats.arm_summary(p, max(200, n_bootstrap // 2), bootstrap_seed)
                 for p in pooled.values()}
    curves = {arm_names[r["arm"]]: r["curve"] for arm in by_arm for r in by_arm[arm][:1] if r.get("curve")}
    first = [(arm_names[arm], rs[0]) for arm, rs in by_arm.items()]
    with matplotlib.rc_context():
        matplotlib.rcdefaults()  # nnU-Net's training plots set seaborn's font_scale 2.5 for the whole process
        has_curves = plot_learning_curves(curves, out / CURVES_PNG)
        reference, exploratory = exploratory_comparison(first, out, max(1, n_bootstrap // 4), bootstrap_seed)
    sections = {
        "hypotheses": hypotheses_section(hypotheses, comparisons, progress),
        "secondary": secondary_section(comparisons),
        "per_seed": per_seed_section(runs, hypotheses),
        "pooled": pooled_section(summaries, {p.name: p.seeds for p in pooled.values()}),
        "curves": (f"![learning curves]({CURVES_PNG})\n\nFP/case and lesion sensitivity with every candidate kept, "
                   "on a fixed subset of the held-out cases, from snapshots of each arm's first seed (the last point "
                   "is the final model)." if has_curves else "No learning curve recorded."),
        "exploratory": exploratory,
        "reference": reference,
        "timings": _timings(runs),
    }
    previous = (out / "README.md").read_text() if (out / "README.md").exists() else None
    (out / "README.md").write_text(readme(record, sections, previous))
    return {key: (None if c is None else {"treatment": c.treatment, "control": c.control, "seeds": list(c.seeds),
                                          "matched_sensitivity": c.matched_sensitivity, "primary": c.primary,
                                          "secondary": c.secondary, "verdict": study_stats.verdict(c)})
            for key, c in comparisons.items()} | {"pooled": summaries}


def _clean(value):
    """JSON-safe: numpy scalars to Python, nan/inf to None, tuples to lists."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dump(path: Path, data: dict) -> None:
    """Write a record atomically (a run record is the proof that the run finished)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_clean(data), indent=1, allow_nan=False) + "\n")
    tmp.replace(path)
