"""`pdac study --quick`: the whole CE-vs-Tversky protocol end to end with tiny budgets."""

import json

from conftest import pdac

from pdac.lab.study import ARMS, arms_for, discriminative_spec


def test_quick_study_trains_every_arm_and_compares_them(tmp_path):
    report, work = tmp_path / "report", tmp_path / "work"
    r = pdac("study", "--quick", "-o", str(report), "--work", str(work), timeout=1800,
             env={"nnUNet_n_proc_DA": "1", "nnUNet_def_n_proc": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    data = json.loads((report / "metrics.json").read_text())
    assert [s["name"] for s in data["sets"]] == list(ARMS)
    assert [c["set"] for c in data["comparisons"]] == list(ARMS)[1:]
    assert all(s["num_cases"] == 6 for s in data["sets"])
    for trainer in arms_for("adam").values():  # each arm trained its own model (AdamW twins on phantoms)
        assert list((work / "nnUNet_results").glob(f"Dataset214_*/{trainer}__*/fold_0/checkpoint_final.pth"))
    readme = (report / "README.md").read_text()
    assert "Measured differences against CE" in readme and "Answer on this data" in readme
    record = json.loads((report / "study.json").read_text())
    assert record["synthetic"] is True and record["settings"]["epochs"] == 1
    assert record["settings"]["optimizer"] == "adam" and record["arms"] == arms_for("adam")
    spec = discriminative_spec()  # the benchmark the phantoms were drawn from is on record and in the README
    assert record["benchmark"]["lesion_diameter_mm"] == list(spec.lesion_diameter_mm)
    low, high = spec.lesion_diameter_mm
    assert f"{low:g}-{high:g} mm across" in readme
    for plot in ("roc.png", "pr.png", "froc.png"):
        assert (report / plot).stat().st_size > 5000


def test_conclusion_reads_false_positives_from_the_numbers():
    """Hand-made report: T reaches only 60% sensitivity, so FP/case is compared there (CE 0.3, T 0.2)."""
    from pdac.lab.study import conclusion, fp_at_matched_sensitivity

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

    import pytest

    from pdac.errors import UsageError
    from pdac.lab.study import StudySettings, _data

    spec = dataclasses.asdict(discriminative_spec())
    for name in ("train", "test"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "truth.json").write_text(json.dumps({"spec": spec}))
    assert _data(tmp_path, StudySettings(), None, None)[0] == tmp_path / "train" / "imagesTr"
    spec["lesion_diameter_mm"] = [8.0, 25.0]
    (tmp_path / "test" / "truth.json").write_text(json.dumps({"spec": spec}))
    with pytest.raises(UsageError, match="different benchmark"):
        _data(tmp_path, StudySettings(), None, None)
