"""`pdac study`: the pre-registered loss study (docs/study/PROTOCOL.md). The quick path end to end (two arms in
CI; the default quick plan with two seeds and CE, slow), and its pieces on hand-made run records: the plan, the
two-level bootstrap, the decision rule, the report."""

import json
import os

import pytest
from conftest import pdac

from pdac.lab import study_stats
from pdac.lab.study import ARM, DECISIVE, HYPOTHESES, StudySettings, discriminative_spec
from pdac.lab.study_stats import PooledArm

QUICK_ENV = {"nnUNet_n_proc_DA": "1", "nnUNet_def_n_proc": "1"}


def _run_record_checks(report, work, name):
    run = json.loads((report / "runs" / f"{name}.json").read_text())
    arm, seed = run["arm"], run["seed"]
    assert name == f"{arm}__seed{seed}" and run["trainer"] == ARM[arm].adam_trainer
    assert len(run["cases"]) == 6 and all("lesions" in c and "prediction" in c for c in run["cases"].values())
    # each seed trained into its own results folder
    assert list((work / "nnUNet_results" / f"seed{seed}").glob(f"Dataset214_*/{run['trainer']}__*/fold_0/"
                                                                 "checkpoint_final.pth"))
    return run


def test_quick_study_runs_the_whole_path_stops_and_resumes(tmp_path):
    """CI's check of the study path: train, detect, snapshot learning curves, bootstrap, verdict, report."""
    report, work = tmp_path / "report", tmp_path / "work"
    quick = ["study", "--quick", "-o", str(report), "--work", str(work), "--arms", "dice", "tversky-fp", "--seeds", "1"]
    # a tiny time limit: one run, then a clean stop with a partial report
    r = pdac(*quick, "--max-minutes", "0.01", timeout=1800, env=QUICK_ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(p.stem for p in (report / "runs").glob("*.json")) == ["dice__seed1"]
    first = (report / "runs" / "dice__seed1.json").read_bytes()
    assert "1 of 2 runs finished" in (report / "README.md").read_text()
    # the same command without the limit resumes: the recorded run is kept, the other one runs
    r = pdac(*quick, timeout=1800, env=QUICK_ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(p.stem for p in (report / "runs").glob("*.json")) == ["dice__seed1", "tversky-fp__seed1"]
    assert (report / "runs" / "dice__seed1.json").read_bytes() == first
    for name in ("dice__seed1", "tversky-fp__seed1"):
        run = _run_record_checks(report, work, name)
        # learning curve: the epoch-1 snapshot (loaded as the pipeline's lesion model) and the final model
        assert [p["iterations"] for p in run["curve"]] == [2, 4]
        assert all(p["cases"] == 4 and p["fp_per_case"] >= 0 for p in run["curve"])
        assert run["seconds"]["curve"] is not None
    readme = (report / "README.md").read_text()
    assert "complete (2 runs)" in readme
    h1 = next(line for line in readme.splitlines() if line.startswith("| H1 |"))
    assert "**supported**" in h1 or "**not supported**" in h1
    record = json.loads((report / "study.json").read_text())
    assert record["results"]["H1"]["seeds"] == [1] and len(record["results"]["H1"]["primary"]["ci"]) == 2
    spec = discriminative_spec()  # the benchmark the phantoms were drawn from is on record and in the README
    assert record["benchmark"]["lesion_diameter_mm"] == list(spec.lesion_diameter_mm)
    assert f"{spec.lesion_diameter_mm[0]:g}-{spec.lesion_diameter_mm[1]:g} mm across" in readme
    assert (report / "learning_curves.png").stat().st_size > 5000
    # without CE the exploratory comparison says which arm is its reference
    assert "first seed against Dice (Tversky 0.5/0.5) (no CE run recorded)" in readme


@pytest.mark.slow
def test_quick_study_pools_training_seeds_and_compares_against_ce(tmp_path):
    """The default quick plan: three arms, two seeds (seed 2 without curves), CE the exploratory reference."""
    report, work = tmp_path / "report", tmp_path / "work"
    r = pdac("study", "--quick", "-o", str(report), "--work", str(work), timeout=1800, env=QUICK_ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    runs = ["dice__seed1", "tversky-fp__seed1", "dice__seed2", "tversky-fp__seed2", "ce__seed1"]
    assert sorted(p.stem for p in (report / "runs").glob("*.json")) == sorted(runs)
    for name in runs:
        run = _run_record_checks(report, work, name)
        assert (run["curve"] is None) == (run["seed"] != 1)
    readme = (report / "README.md").read_text()
    assert "complete (5 runs)" in readme
    assert "arms not in this study" in next(line for line in readme.splitlines() if line.startswith("| H2 |"))
    record = json.loads((report / "study.json").read_text())
    assert record["results"]["H1"]["seeds"] == [1, 2] and record["results"]["H2"] is None
    # the exploratory comparison: each arm's first seed, CE the reference
    data = json.loads((report / "metrics.json").read_text())
    assert [s["name"] for s in data["sets"]] == [ARM[a].name for a in ("ce", "dice", "tversky-fp")]
    assert "first seed against CE\n" in readme and "Measured differences against CE" in readme
    for plot in ("learning_curves.png", "roc.png", "pr.png", "froc.png"):
        assert (report / plot).stat().st_size > 5000


def test_bad_study_options_are_refused_before_any_work(tmp_path):
    from pdac.errors import UsageError
    from pdac.lab.study import check_settings

    for changes, message in (({"seeds": (1, 1)}, "--seeds"), ({"arms": ("dice", "bogus")}, "--arms"),
                             ({"max_minutes": -1.0}, "--max-minutes")):
        with pytest.raises(UsageError, match=message):
            check_settings(StudySettings(**changes))
    out, work = tmp_path / "out", tmp_path / "work"
    r = pdac("study", "--quick", "-o", str(out), "--work", str(work), "--arms", "dice", "bogus")
    assert r.returncode == 2 and "--arms" in r.stderr and "Traceback" not in r.stderr
    # a run recorded under another protocol is not mixed in, and nothing is done
    (out / "runs").mkdir(parents=True, exist_ok=True)
    (out / "runs" / "dice__seed1.json").write_text(json.dumps({"protocol": {"epochs": 5}}))
    r = pdac("study", "--quick", "-o", str(out), "--work", str(work), "--arms", "dice", "--seeds", "1")
    assert r.returncode == 2 and "another protocol" in r.stderr and "Traceback" not in r.stderr
    assert not (work / "train").exists()


def test_plan_runs_the_hypotheses_arms_first_with_three_seeds():
    plan = [(arm.key, seed) for arm, seed in StudySettings().plan()]
    assert len(plan) == 15 and set(DECISIVE) == {"dice", "tversky-fp", "dice-ce", "tversky-ce"}
    assert {a for a, _ in plan[:12]} == set(DECISIVE) and [s for _, s in plan[:12]] == [1] * 4 + [2] * 4 + [3] * 4
    assert plan[12:] == [("ce", 1), ("tversky-fn", 1), ("focal-tversky", 1)]
    chosen = StudySettings(arms=("ce", "dice"), seeds=(4, 5), single_seed_arms=()).plan()
    assert [(a.key, s) for a, s in chosen] == [("dice", 4), ("dice", 5), ("ce", 4), ("ce", 5)]
    assert {(h.treatment, h.control) for h in HYPOTHESES} == {("tversky-fp", "dice"), ("tversky-ce", "dice-ce")}


def fake_run(arm: str, seed: int, fps: list[int], n_pos: int = 10) -> dict:
    """A run record: case i has fps[i] false-positive candidates (confidence 0.6); cases < n_pos hold one
    PDAC found at confidence 0.5 (so matching 80% sensitivity keeps every false positive)."""
    cases = {}
    for i, n_fp in enumerate(fps):
        target = int(i < n_pos)
        lesions = ([[1, 0.5, 0.4]] if target else []) + [[0, 0.6, 0.0]] * n_fp
        cases[f"c{i:02d}"] = {"target": target, "prediction": 0.5 + 0.1 * bool(n_fp) if target else 0.6 * bool(n_fp),
                              "map_max": 0.6, "dice": 0.5 if target else None, "num_candidates": len(lesions),
                              "lesions": lesions}
    return {"arm": arm, "name": ARM[arm].name, "seed": seed, "cases": cases}


def test_two_level_bootstrap_carries_training_seed_variance():
    """The treatment's FPs differ by seed only (0, 2, 4 per case) and the control has 2 on every case: the pooled
    difference is 0, and only resampling the seeds makes its CI wide."""
    treatment = PooledArm.from_runs("T", [fake_run("tversky-fp", s, [k] * 20) for s, k in ((1, 0), (2, 2), (3, 4))])
    control = PooledArm.from_runs("C", [fake_run("dice", s, [2] * 20) for s in (1, 2, 3)])
    c = study_stats.compare(treatment, control, n_resamples=300, rng_seed=1)
    assert c.seeds == (1, 2, 3) and c.matched_sensitivity == 0.8
    assert c.primary["delta"] == pytest.approx(0.0)
    low, high = c.primary["ci"]
    assert low <= -1.3 and high >= 1.3  # seed multisets {1,1,1} and {3,3,3} give -2 and +2
    assert study_stats.verdict(c) == "not supported"
    # case-level variance alone (one seed, FPs on some cases) also widens it
    one = study_stats.compare(PooledArm.from_runs("T", [fake_run("tversky-fp", 1, [0, 3] * 10)]),
                              PooledArm.from_runs("C", [fake_run("dice", 1, [2] * 20)]), n_resamples=300, rng_seed=1)
    assert one.primary["delta"] == pytest.approx(-0.5) and one.primary["ci"][0] < -0.5 < one.primary["ci"][1] < 0.5


def test_decision_rule_needs_the_whole_ci_below_zero():
    fewer = study_stats.compare(PooledArm.from_runs("T", [fake_run("tversky-fp", s, [0] * 20) for s in (1, 2)]),
                                PooledArm.from_runs("C", [fake_run("dice", s, [1, 2] * 10) for s in (1, 2)]),
                                n_resamples=200, rng_seed=0)
    assert fewer.primary["treatment"] == 0 and fewer.primary["control"] == pytest.approx(1.5)
    assert fewer.primary["ci"][1] < 0 and study_stats.verdict(fewer) == "supported"
    assert fewer.secondary["fp_per_case"]["delta"] == pytest.approx(-1.5)
    assert fewer.secondary["auroc"]["delta"] > 0  # the control's false positives rank negatives above positives
    same = study_stats.compare(PooledArm.from_runs("T", [fake_run("tversky-fp", 1, [1] * 20)]),
                               PooledArm.from_runs("C", [fake_run("dice", 1, [1] * 20)]), n_resamples=100)
    assert same.primary["ci"] == [0.0, 0.0] and study_stats.verdict(same) == "not supported"
    assert study_stats.verdict(None) == "pending"


def test_report_is_written_from_run_records_alone(tmp_path):
    from pdac.lab import study_report

    runs = [fake_run("ce", 1, [3] * 20)] + [fake_run(a, s, [k] * 20) for a, k in (("dice", 2), ("tversky-fp", 0))
                                             for s in (1, 2)]
    for r in runs:
        r["metrics"] = {"auroc": 0.9, "ap": 0.8, "fp_per_case": 1.0, "fp_per_case_at_sensitivity": {"0.8": 0.5},
                        "dice_mean_positive": 0.5}
        r["seconds"] = {"train": 60, "detect": 30, "evaluate": 2, "curve": 20 if r["seed"] == 1 else None}
        r["curve"] = ([{"epoch": e, "iterations": 40 * e, "cases": 4, "fp_per_case": 3 - e, "sensitivity": e / 3}
                       for e in (1, 2, 3)] if r["seed"] == 1 else None)
    record = {"synthetic": True, "status": "complete (5 runs)", "command": "pdac study", "minutes": 1.0,
              "primary_ci_level": 0.975, "hardware": {"device": "cpu"}, "versions": {"numpy": "x"},
              "settings": {"n_train": 60, "n_test": 20, "train_seed": 101, "test_seed": 202, "fold": 0, "epochs": 3,
                           "iterations": 40, "optimizer": "adam", "n_bootstrap": 20}}
    names = {a: ARM[a].name for a in ARM}
    (tmp_path / "README.md").write_text(f"old\n{study_report.HAND_WRITTEN}\nmy notes\n")
    results = study_report.write_report(tmp_path, record, HYPOTHESES, names, runs, {"H1": True, "H2": False},
                                        {"H1": "4 of 4 runs", "H2": "arms not in this study"}, 20, 0)
    readme = (tmp_path / "README.md").read_text()
    assert results["H1"]["verdict"] == "supported" and results["H2"] is None
    assert "| H1 |" in readme and "**supported**" in readme and "**pending**" in readme
    assert "H1 seed 2: 0.00 vs 2.00 FP/case at 80% sensitivity" in readme
    assert readme.rstrip().endswith("my notes") and "old" not in readme.splitlines()[0]
    assert (tmp_path / "learning_curves.png").stat().st_size > 5000
    assert [s["name"] for s in json.loads((tmp_path / "metrics.json").read_text())["sets"]][0] == "CE"
    assert "each arm's first seed against CE\n" in readme
    assert os.path.exists(tmp_path / "froc.png")


def test_conclusion_reads_false_positives_from_the_numbers():
    """Hand-made report: T reaches only 60% sensitivity, so FP/case is compared there (CE 0.3, T 0.2)."""
    from pdac.lab.study_report import conclusion, fp_at_matched_sensitivity

    ce = {"name": "CE", "fp_per_case": 0.5,
          "froc": {"sensitivity": [0.2, 0.4, 0.6, 0.8], "fp_per_case": [0.0, 0.1, 0.3, 0.5]}}
    t = {"name": "T", "fp_per_case": 0.2, "froc": {"sensitivity": [0.2, 0.6], "fp_per_case": [0.05, 0.2]}}
    none = {"name": "N", "fp_per_case": 0.0, "froc": {"sensitivity": [], "fp_per_case": []}}
    assert fp_at_matched_sensitivity(ce, t) == (0.6, 0.3, 0.2)
    assert fp_at_matched_sensitivity(ce, ce) == (0.8, 0.5, 0.5)
    assert fp_at_matched_sensitivity(ce, none) is None
    comp = {"delta_auroc": 0.1, "p_auroc": 0.2, "delta_ap": -0.05, "p_ap": 0.6}
    data = {"sets": [ce, t, none], "comparisons": [
        {"set": "T", **comp, "delta_fp_per_case": -0.3, "p_fp_per_case": 0.01},
        {"set": "N", **comp, "delta_fp_per_case": -0.5, "p_fp_per_case": 0.3}]}
    text = conclusion(data)
    assert "at 60% lesion sensitivity 0.20 vs 0.30 FP/case" in text
    assert "Significant at 0.05: FP/case." in text and "no lesion found by one of them" in text
    assert "significantly fewer false-positive candidates per case than CE: T;" in text
    assert "fewer FP/case than CE at matched lesion sensitivity: T." in text
    data["comparisons"][0]["p_fp_per_case"] = 0.2
    assert "no Tversky-family loss changed the false-positive candidates per case significantly" in conclusion(data)


def test_resuming_on_another_benchmarks_phantoms_is_refused(tmp_path):
    """A work folder whose phantoms were drawn from another spec must not be trained and reported as this one."""
    import dataclasses

    from pdac.errors import UsageError
    from pdac.lab.study import _data

    spec = dataclasses.asdict(discriminative_spec())
    for name in ("train", "test"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "truth.json").write_text(json.dumps({"spec": spec}))
    assert _data(tmp_path, StudySettings(), None, None)[0] == tmp_path / "train" / "imagesTr"
    spec["lesion_diameter_mm"] = [8.0, 25.0]
    (tmp_path / "test" / "truth.json").write_text(json.dumps({"spec": spec}))
    with pytest.raises(UsageError, match="different benchmark"):
        _data(tmp_path, StudySettings(), None, None)


def test_fast_auroc_and_ap_agree_with_picai_eval():
    """The bootstrap's own AUROC and AP (picai_eval's are too slow for 2,000 resamples) give picai_eval's values,
    with ties, missed lesions and repeated (resampled) cases."""
    import numpy as np
    from picai_eval import Metrics

    rng = np.random.default_rng(3)
    runs = []
    for seed in (1, 2):
        cases = {}
        for i in range(30):
            target = int(i % 3 == 0)
            lesions = [[1, float(rng.choice([0.0, 0.3, 0.5, 0.8])), 0.5]] if target else []
            lesions += [[0, float(rng.choice([0.3, 0.4, 0.5])), 0.0] for _ in range(int(rng.integers(0, 3)))]
            cases[f"c{i:02d}"] = {"target": target, "prediction": max([e[1] for e in lesions], default=0.0),
                                  "dice": None, "lesions": lesions}
        runs.append({"seed": seed, "cases": cases})
    arm = PooledArm.from_runs("A", runs)
    metrics = Metrics(lesion_results=arm.lesions, case_target=arm.target, case_pred=arm.prediction)
    for keys in (arm.keys(), arm.keys([2, 2, 1], ["c00", "c01", "c01", "c03", "c05", "c05", "c09"])):
        assert study_stats.auroc(arm, keys) == pytest.approx(metrics.calc_auroc(subject_list=keys), abs=1e-12)
        assert study_stats.average_precision(arm, keys) == pytest.approx(metrics.calc_AP(subject_list=keys), abs=1e-12)
