"""`pdac study --quick`: the whole CE-vs-Tversky protocol end to end with tiny budgets."""

import json

from conftest import pdac

from pdac.study import ARMS, arms_for


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
    for plot in ("roc.png", "pr.png", "froc.png"):
        assert (report / plot).stat().st_size > 5000
