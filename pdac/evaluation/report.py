"""The report folder of `pdac evaluate`: metrics.json, summary.md, the ROC / PR / FROC plots and report.html."""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from pdac.errors import OutputError
from pdac.evaluation.bootstrap import BOOTSTRAPPED, bootstrap
from pdac.evaluation.html_report import evaluation_html
from pdac.evaluation.metrics import MIN_OVERLAP, OVERLAP_FUNC, SetResult
from pdac.infer.io import write_json_atomic, write_text_atomic

SENSITIVITY_TARGETS = (0.8, 0.9)
FP_PER_CASE_TARGETS = (0.1, 0.5, 1.0)
REPORT_HTML = "report.html"


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


def metric_table(data: dict) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the metrics table: one column per detection set, CIs in brackets."""
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
    return ["metric"] + [s["name"] for s in data["sets"]], [[title] + [cell(s) for s in data["sets"]]
                                                             for title, cell in rows]


COMPARISON_HEADER = ["set", "ΔAUROC [95% CI]", "p (AUROC)", "ΔAP [95% CI]", "p (AP)", "Δscore", "p (score)",
                     "ΔFP/case [95% CI]", "p (FP/case)"]


def comparison_table(data: dict) -> list[list[str]]:
    """Rows of the paired comparisons against the first set (empty with a single set)."""
    return [[c["set"], _fmt(c["delta_auroc"], c["delta_auroc_ci"]), _fmt_p(c["p_auroc"]),
             _fmt(c["delta_ap"], c["delta_ap_ci"]), _fmt_p(c["p_ap"]), _fmt(c["delta_score"]), _fmt_p(c["p_score"]),
             _fmt(c["delta_fp_per_case"], c["delta_fp_per_case_ci"]), _fmt_p(c["p_fp_per_case"])]
            for c in data["comparisons"]]


def title_line(data: dict) -> str:
    return (f"PANORAMA evaluation: {data['num_cases']} cases ({data['num_positive_cases']} positive, "
            f"{data['num_lesions']} lesions)")


def method_line(data: dict) -> str:
    n_boot = data["settings"]["bootstrap_resamples"]
    ci_note = f" [95% CI, {n_boot} bootstrap resamples of cases]" if n_boot else ""
    return f"picai_eval, IoU >= {MIN_OVERLAP:g}, truth = label == 1; score = (AUROC + AP) / 2{ci_note}."


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def summary_markdown(data: dict) -> str:
    sets = data["sets"]
    header, rows = metric_table(data)
    lines = [f"# {title_line(data)}", "", method_line(data), "", _md_row(header), "|---|" + "---|" * len(sets)]
    lines += [_md_row(row) for row in rows]
    if data["comparisons"]:
        lines += ["", f"Paired bootstrap vs {sets[0]['name']} (two-sided p, same resampled cases):", "",
                  _md_row(COMPARISON_HEADER), "|---" * len(COMPARISON_HEADER) + "|"]
        lines += [_md_row(row) for row in comparison_table(data)]
    return "\n".join(lines) + "\n"


@dataclasses.dataclass(frozen=True)
class CaseOutcome:
    """One case of one set, for the per-case table."""

    case: str
    target: int  # 1: PDAC in the label
    prediction: float  # patient likelihood (or the map's maximum)
    lesions: int  # truth lesions
    hits: int  # truth lesions matched by a candidate (IoU >= 0.1)
    false_positives: int  # candidates matching no lesion
    dice: float | None

    @property
    def missed(self) -> int:
        return self.lesions - self.hits

    @property
    def error(self) -> float:
        """How wrong the patient prediction is: 1 - p for a positive case, p for a negative one."""
        return abs(self.target - self.prediction)


def case_outcomes(set_data: dict) -> list[CaseOutcome]:
    """A set's cases (from its metrics.json entry), worst first: the largest patient error, then the most
    missed lesions and false positives."""
    out = []
    for case, c in set_data["cases"].items():
        lesions = [e for e in c["lesions"] if e[0]]
        out.append(CaseOutcome(case=case, target=c["target"], prediction=c["prediction"], lesions=len(lesions),
                               hits=sum(1 for e in lesions if e[1] > 0),
                               false_positives=sum(1 for e in c["lesions"] if not e[0] and e[1] > 0),
                               dice=c["dice"]))
    return sorted(out, key=lambda o: (-o.error, -(o.missed + o.false_positives), o.case))


def plot_pngs(results: Sequence[SetResult]) -> dict[str, bytes]:
    """{"roc", "pr", "froc"}: PNGs of the patient ROC, lesion precision-recall and lesion FROC, sets overlaid."""
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
    pngs = {}
    for name, ax in axes.items():
        xlabel, ylabel, title = labels[name]
        ax.set(xlabel=xlabel, ylabel=ylabel, title=title, ylim=(-0.02, 1.02),
               xlim=(0, min(max_fp, 5.0) * 1.02) if name == "froc" else (-0.02, 1.02))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right", fontsize=8)
        buffer = io.BytesIO()
        figs[name].savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        pngs[name] = buffer.getvalue()
    return pngs


def save_plots(results: Sequence[SetResult], out_dir: Path) -> dict[str, bytes]:
    """roc.png (patient ROC), pr.png (lesion precision-recall), froc.png (lesion FROC); returns their bytes."""
    pngs = plot_pngs(results)
    for name, png in pngs.items():
        path = out_dir / f"{name}.png"
        try:
            path.write_bytes(png)
        except OSError as e:
            raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
    return pngs


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
                     "froc": "step curve, no interpolation (see pdac.evaluation.metrics.Froc)"},
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


def write_report(report: EvaluationReport, out_dir: str | Path, case_links: Mapping[str, str] | None = None) -> None:
    """summary.md, metrics.json, roc.png, pr.png, froc.png and report.html in `out_dir` (`case_links`: {case: link
    to its viewer page})."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "summary.md").write_text(report.summary)
    except OSError as e:
        raise OutputError(f"cannot write to {out_dir}: {e.strerror or e}") from None
    write_json_atomic(report.data, out_dir / "metrics.json")
    pngs = save_plots(report.results, out_dir)
    write_text_atomic(report_html(report.data, pngs, case_links), out_dir / REPORT_HTML)


def report_html(data: dict, pngs: dict[str, bytes], case_links: Mapping[str, str] | None = None) -> str:
    sets = data["sets"]
    comparison = (sets[0]["name"], COMPARISON_HEADER, comparison_table(data)) if data["comparisons"] else None
    return evaluation_html(title_line(data), method_line(data), data["labels"], metric_table(data), comparison,
                           {s["name"]: case_outcomes(s) for s in sets}, pngs, case_links or {})
