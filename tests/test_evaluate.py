"""`pdac evaluate`: agreement with picai_eval, hand-computed FROC numbers, bootstrap CIs, refusals, comparisons.

Small synthetic volumes (10 x 20 x 20 voxels) with cube lesions; each CLI run is a few seconds."""

from __future__ import annotations

import contextlib
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from pdac.errors import InputError, UsageError

REPO = Path(__file__).resolve().parent.parent
SHAPE = (10, 20, 20)  # z, y, x
SPACING = (0.8, 0.8, 2.5)
ORIGIN = (-123.456, 78.9, -300.123)
DIRECTION = (1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)


def pdac_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pdac", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=300)


def image(arr: np.ndarray, spacing=SPACING, origin=ORIGIN, direction=DIRECTION) -> sitk.Image:
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(direction)
    return img


def write(arr: np.ndarray, path: Path, **geometry) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image(arr, **geometry), str(path), useCompression=True)
    return path


def cube(arr: np.ndarray, z: int, y: int, x: int, value, size: int = 3) -> None:
    arr[z:z + size, y:y + size, x:x + size] = value


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if " ERROR " in line]


def picai_metrics(dets: dict, labels: dict, likelihoods: dict | None = None):
    """picai_eval's own evaluate() with PANORAMA's settings, independent of pdac's code."""
    with contextlib.redirect_stdout(io.StringIO()):
        from picai_eval import Metrics, evaluate
    cases = sorted(dets)
    metrics = evaluate(y_det=[dets[c] for c in cases], y_true=[labels[c] for c in cases], subject_list=cases,
                       min_overlap=0.1, overlap_func="IoU", num_parallel_calls=1,
                       y_true_postprocess_func=lambda y: (y == 1).astype(np.int32))
    if likelihoods is not None:
        metrics = Metrics(lesion_results=metrics.lesion_results, case_target=metrics.case_target,
                          case_pred={c: likelihoods[c] for c in cases})
    return metrics


# Non-touching 3x3x3 slots (candidates may be shifted by one voxel in x and still not touch a neighbour).
SLOTS = [(z, y, x) for z in (0, 5) for y in (1, 7, 13) for x in (1, 7, 13)]


def random_dataset(root: Path, n: int = 12, seed: int = 0):
    """Cases with 0-2 lesions (label 1) inside a 'pancreas' (label 4) and some veins (label 2); detections hit,
    shift, undersize or miss lesions and add false positives; mixed .mha / .nii.gz files."""
    rng = np.random.default_rng(seed)
    dets, labels, likelihoods = {}, {}, {}
    for i in range(n):
        case = f"case_{i:02d}"
        label = np.zeros(SHAPE, np.uint8)
        label[:, 1:19, 1:19] = 4
        label[:, 0, :] = 2
        det = np.zeros(SHAPE, np.float32)
        slots = [SLOTS[k] for k in rng.permutation(len(SLOTS))]
        n_lesions = int(rng.integers(1, 3)) if i % 2 == 0 else int(rng.integers(0, 2)) * (i % 3 == 0)
        for z, y, x in slots[:n_lesions]:
            cube(label, z, y, x, 1)
            kind = rng.choice(["exact", "shift", "tiny", "miss"])
            conf = round(float(rng.uniform(0.05, 1.0)), 2)
            if kind == "exact":
                cube(det, z, y, x, conf)
            elif kind == "shift":
                cube(det, z, y, x + 1, conf)
            elif kind == "tiny":
                det[z + 1, y + 1, x + 1] = conf
        for z, y, x in slots[n_lesions:n_lesions + int(rng.integers(0, 3))]:
            cube(det, z, y, x, round(float(rng.uniform(0.05, 0.9)), 2), size=2)
        dets[case], labels[case] = det, label
        likelihoods[case] = round(float(np.clip(det.max() + rng.normal(0, 0.2), 0, 1)), 3)
        write(det, root / "det" / f"{case}_detection_map{'.mha' if i % 3 else '.nii.gz'}")
        write(label, root / "labels" / f"{case}{'.nii.gz' if i % 4 else '.mha'}")
    (root / "det" / "pdac-likelihood.json").write_text(json.dumps(likelihoods))
    return dets, labels, likelihoods


@pytest.fixture(scope="module")
def random_run(tmp_path_factory):
    """One CLI run over the random dataset: set 'lik' uses the likelihoods JSON, set 'max' the maps' maxima."""
    root = tmp_path_factory.mktemp("random")
    dets, labels, likelihoods = random_dataset(root)
    out = root / "report"
    result = pdac_cli("evaluate", "--detections", str(root / "det"), str(root / "det"), "--labels",
                      str(root / "labels"), "--likelihoods", str(root / "det" / "pdac-likelihood.json"), "-",
                      "--names", "lik", "max", "--bootstrap", "200", "--seed", "7", "-o", str(out))
    assert result.returncode == 0, result.stderr
    return dets, labels, likelihoods, out, json.loads((out / "metrics.json").read_text()), result


# (a) agreement with picai_eval ------------------------------------------------------------------------------

def test_cli_agrees_with_picai_eval(random_run):
    dets, labels, likelihoods, out, data, _ = random_run
    by_name = {s["name"]: s for s in data["sets"]}
    ref_lik = picai_metrics(dets, labels, likelihoods)
    ref_max = picai_metrics(dets, labels)
    assert 0 < ref_lik.auroc < 1 and 0 < ref_max.AP < 1 and ref_lik.auroc != ref_max.auroc  # a real test
    assert by_name["lik"]["auroc"] == pytest.approx(ref_lik.auroc, abs=1e-6)
    assert by_name["lik"]["ap"] == pytest.approx(ref_lik.AP, abs=1e-6)
    assert by_name["lik"]["score"] == pytest.approx(ref_lik.score, abs=1e-6)
    assert by_name["max"]["auroc"] == pytest.approx(ref_max.auroc, abs=1e-6)
    assert by_name["max"]["ap"] == pytest.approx(ref_max.AP, abs=1e-6)
    assert by_name["lik"]["case_prediction"] == "likelihoods"
    assert by_name["max"]["case_prediction"] == "map maximum"
    assert data["num_cases"] == len(dets) and data["num_lesions"] == ref_max.num_lesions
    for name in ("metrics.json", "summary.md", "roc.png", "pr.png", "froc.png"):
        assert (out / name).stat().st_size > 0


def test_api_agrees_with_picai_eval(random_run):
    from pdac.evaluation.metrics import evaluate_arrays

    dets, labels, likelihoods, *_ = random_run
    result = evaluate_arrays(dets, labels, likelihoods)
    ref = picai_metrics(dets, labels, likelihoods)
    assert result.auroc == pytest.approx(ref.auroc, abs=1e-12)
    assert result.ap == pytest.approx(ref.AP, abs=1e-12)
    assert result.metrics.lesion_results == ref.lesion_results


# (b) hand-computed FROC, AUROC, AP and Dice -----------------------------------------------------------------

def hand_dataset(root: Path) -> Path:
    """4 cases, 5 lesions. Kept candidates (confidence: TP/FP): A .9 TP, .4 TP, .5 FP; B .8 TP; C .3 TP and one
    missed lesion; D (negative) .6 FP, .35 FP."""
    lab = {c: np.zeros(SHAPE, np.uint8) for c in "ABCD"}
    det = {c: np.zeros(SHAPE, np.float32) for c in "ABCD"}
    for case, (z, y, x), lesion, confidence in [
        ("A", (2, 2, 2), True, 0.9), ("A", (2, 12, 12), True, 0.4), ("A", (6, 2, 14), False, 0.5),
        ("B", (4, 8, 8), True, 0.8),
        ("C", (2, 2, 2), True, None), ("C", (6, 14, 14), True, None),  # the second lesion is missed
        ("D", (2, 2, 2), False, 0.6), ("D", (6, 14, 14), False, 0.35),
    ]:
        if lesion:
            cube(lab[case], z, y, x, 1)
        if confidence is not None:
            cube(det[case], z, y, x, confidence)
    det["C"][2:5, 2:5, 2] = 0.3  # 9 of the first lesion's 27 voxels: IoU 1/3, a hit
    lab["D"][:, 0, :] = 2  # other PANORAMA structures are not truth
    lab["B"][:, 19, :] = 4
    for c in "ABCD":
        write(det[c], root / "det" / f"{c}_detection_map.mha")
        write(lab[c], root / "labels" / f"{c}.nii.gz")
    return root


HAND_LESIONS = {  # what picai_eval's matching must give for hand_dataset (is_lesion, confidence)
    "A": [(1, 0.9), (1, 0.4), (0, 0.5)], "B": [(1, 0.8)], "C": [(1, 0.3), (1, 0.0)], "D": [(0, 0.6), (0, 0.35)],
}


def test_froc_numbers_by_hand_api():
    """Operating points (t: sens, FP/case): .9: .2, 0 | .8: .4, 0 | .6: .4, .25 | .5: .4, .5 | .4: .6, .5 |
    .35: .6, .75 | .3: .8, .75."""
    from pdac.evaluation.metrics import froc_from_lesion_results

    froc = froc_from_lesion_results({c: [(a, b, 0.0) for a, b in v] for c, v in HAND_LESIONS.items()})
    np.testing.assert_allclose(froc.sensitivity, [0, .2, .4, .4, .4, .6, .6, .8])
    np.testing.assert_allclose(froc.fp_per_case, [0, 0, 0, .25, .5, .5, .75, .75])
    assert froc.sensitivity_at(0.1) == pytest.approx(0.4)
    assert froc.sensitivity_at(0.5) == pytest.approx(0.6)
    assert froc.sensitivity_at(1.0) == pytest.approx(0.8)
    assert froc.sensitivity_at(0.0) == pytest.approx(0.4)
    assert froc.fp_per_case_at(0.8) == pytest.approx(0.75)
    assert froc.fp_per_case_at(0.6) == pytest.approx(0.5)
    assert froc.fp_per_case_at(0.9) is None  # one lesion is never detected
    assert froc.fp_per_case_at(0.2) == 0.0


def test_froc_auroc_ap_dice_by_hand_cli(tmp_path):
    root = hand_dataset(tmp_path)
    result = pdac_cli("evaluate", "--detections", str(root / "det"), "--labels", str(root / "labels"),
                      "--bootstrap", "0", "-o", str(root / "report"))
    assert result.returncode == 0, result.stderr
    s = json.loads((root / "report" / "metrics.json").read_text())["sets"][0]
    for case, expected in HAND_LESIONS.items():
        got = sorted((e[0], round(e[1], 6)) for e in s["cases"][case]["lesions"])
        assert got == sorted(expected), case
    assert s["sensitivity_at_fp_per_case"] == pytest.approx({"0.1": 0.4, "0.5": 0.6, "1": 0.8})
    assert s["fp_per_case_at_sensitivity"]["0.8"] == pytest.approx(0.75)
    assert s["fp_per_case_at_sensitivity"]["0.9"] is None
    # case predictions (map maxima) A .9, B .8, C .3 (positive) vs D .6: 2 of 3 pairs ranked right
    assert s["auroc"] == pytest.approx(2 / 3)
    # lesions by confidence: .9 T .8 T .6 F .5 F .4 T .35 F .3 T, one missed: AP = (1 + 1 + 3/5 + 4/7) / 5
    assert s["ap"] == pytest.approx((1 + 1 + 3 / 5 + 4 / 7) / 5)
    assert s["score"] == pytest.approx((2 / 3 + (1 + 1 + 3 / 5 + 4 / 7) / 5) / 2)
    # Dice of candidates vs truth: A 2*54/(54+81), B 1, C 2*9/(9+54); D has no truth
    dice = {c: s["cases"][c]["dice"] for c in "ABCD"}
    assert dice == pytest.approx({"A": 108 / 135, "B": 1.0, "C": 18 / 63, "D": None})
    assert s["dice_mean_positive"] == pytest.approx((108 / 135 + 1 + 18 / 63) / 3)
    assert s["fp_per_case"] == pytest.approx(3 / 4)  # A .5, D .6 and .35: every candidate kept
    assert s["ci95"] == {"auroc": None, "ap": None, "score": None, "fp_per_case": None}
    summary = (root / "report" / "summary.md").read_text()
    assert "| AUROC (patient) | 0.667 |" in summary and "not reached" in summary


# (c) bootstrap confidence intervals -------------------------------------------------------------------------

def test_ci_contains_point_estimate(random_run):
    *_, data, _ = random_run
    assert data["settings"]["bootstrap_resamples"] == 200
    for s in data["sets"]:
        for k in ("auroc", "ap", "score"):
            lo, hi = s["ci95"][k]
            assert lo <= s[k] <= hi, (s["name"], k)
            assert lo < hi  # a non-degenerate set has a non-degenerate interval


def test_ci_seeded_and_degenerate_perfect_set():
    from pdac.evaluation.bootstrap import bootstrap
    from pdac.evaluation.metrics import evaluate_arrays

    dets, labels = {}, {}
    for i in range(6):
        label = np.zeros(SHAPE, np.uint8)
        det = np.zeros(SHAPE, np.float32)
        if i < 3:
            cube(label, *SLOTS[i], 1)
            cube(det, *SLOTS[i], 0.5 + 0.1 * i)
        dets[f"c{i}"], labels[f"c{i}"] = det, label
    perfect = evaluate_arrays(dets, labels)
    assert perfect.auroc == 1.0 and perfect.ap == 1.0
    boot = bootstrap([perfect], n=100, seed=3)
    assert boot["n_resamples"] == 100
    assert boot["ci"][0] == {"auroc": [1.0, 1.0], "ap": [1.0, 1.0], "score": [1.0, 1.0], "fp_per_case": [0.0, 0.0]}

    dets["c0"] = np.zeros(SHAPE, np.float32)  # one missed lesion: no longer perfect
    cube(dets["c4"], *SLOTS[5], 0.7)  # one false positive above some true ones
    imperfect = evaluate_arrays(dets, labels)
    a, b, c = (bootstrap([imperfect], n=100, seed=s)["ci"][0] for s in (3, 3, 4))
    assert a == b and a != c  # seeded
    for k in ("auroc", "ap", "score", "fp_per_case"):
        assert a[k][0] <= getattr(imperfect, k) <= a[k][1]


def test_bootstrap_skips_single_class_resamples():
    from pdac.evaluation.bootstrap import bootstrap_samples

    samples = bootstrap_samples({"p": 1, "n": 0}, 50, seed=0)
    assert len(samples) == 50 and all(set(s) == {"p", "n"} for s in samples)
    assert bootstrap_samples({"p": 1, "q": 1}, 50, seed=0) == []  # one class: no CIs


# (d) refusals -----------------------------------------------------------------------------------------------

def small_set(root: Path, cases=("a", "b"), label_cases=None, det_geometry=None) -> Path:
    for c in cases:
        det = np.zeros(SHAPE, np.float32)
        cube(det, 2, 2, 2, 0.5)
        write(det, root / "det" / f"{c}_detection_map.mha", **(det_geometry or {}).get(c, {}))
    for c in label_cases or cases:
        label = np.zeros(SHAPE, np.uint8)
        cube(label, 2, 2, 2, 1)
        write(label, root / "labels" / f"{c}.nii.gz")
    return root


@pytest.mark.parametrize(("cases", "label_cases", "message"), [
    (("a", "b", "x"), ("a", "b"), "1 detection map(s) without a label: x"),
    (("a", "b"), ("a", "b", "y"), "1 label(s) without a detection map: y"),
])
def test_refuses_missing_cases(tmp_path, cases, label_cases, message):
    root = small_set(tmp_path, cases, label_cases)
    result = pdac_cli("evaluate", "--detections", str(root / "det"), "--labels", str(root / "labels"),
                      "-o", str(root / "report"))
    assert result.returncode == InputError.exit_code == 3
    lines = error_lines(result)
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (root / "report").exists()


def test_refuses_geometry_mismatch_cli(tmp_path):
    root = small_set(tmp_path, det_geometry={"b": {"spacing": (0.8, 0.8, 3.0)}})
    result = pdac_cli("evaluate", "--detections", str(root / "det"), "--labels", str(root / "labels"),
                      "-o", str(root / "report"))
    assert result.returncode == 3
    lines = error_lines(result)
    assert len(lines) == 1 and "det/b: detection map and label differ in spacing" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("geometry", [
    {"origin": (ORIGIN[0] + 0.5, ORIGIN[1], ORIGIN[2])},
    {"direction": (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)},
    {"spacing": (0.8, 0.81, 2.5)},
])
def test_refuses_geometry_mismatch_api(tmp_path, geometry):
    from pdac.evaluation.discovery import discover

    root = small_set(tmp_path, det_geometry={"a": geometry})
    with pytest.raises(InputError, match=f"differ in {next(iter(geometry))}"):
        discover([root / "det"], root / "labels")


def test_refuses_size_mismatch_and_usage_errors(tmp_path):
    from pdac.evaluation.discovery import discover, load_likelihoods

    root = small_set(tmp_path)
    write(np.zeros((10, 20, 21), np.float32), root / "det" / "b_detection_map.mha")
    with pytest.raises(InputError, match="differ in size"):
        discover([root / "det"], root / "labels")
    with pytest.raises(UsageError, match="--names"):
        discover([root / "det"], root / "labels", names=["x", "y"])
    with pytest.raises(UsageError, match="--likelihoods"):
        discover([root / "det"], root / "labels", likelihood_files=["a.json", "b.json"])
    (tmp_path / "bare.json").write_text("0.5")
    with pytest.raises(UsageError, match="single case"):
        load_likelihoods(tmp_path / "bare.json", ["a", "b"])
    (tmp_path / "partial.json").write_text('{"a": 0.5}')
    with pytest.raises(InputError, match="no likelihood for 1 case"):
        load_likelihoods(tmp_path / "partial.json", ["a", "b"])


# GC layout ---------------------------------------------------------------------------------------------------

def test_gc_layouts(tmp_path, random_run):
    from pdac.evaluation.discovery import find_detection_maps, load_likelihoods
    from pdac.evaluation.run import run_evaluation

    dets, labels, likelihoods, _, data, _ = random_run
    cases = sorted(dets)
    for c in cases:  # one GC output folder per case, as process.py writes it
        write(dets[c], tmp_path / "gc" / c / "images" / "pdac-detection-map" / "detection_map.mha")
        (tmp_path / "gc" / c / "pdac-likelihood.json").write_text(json.dumps(likelihoods[c]))
        write(labels[c], tmp_path / "labels" / f"{c}.mha")
    single = tmp_path / "gc" / cases[0]
    assert find_detection_maps(single)[0] == {cases[0]: single / "images/pdac-detection-map/detection_map.mha"}
    assert load_likelihoods(single / "pdac-likelihood.json", [cases[0]]) == {cases[0]: likelihoods[cases[0]]}
    maps, layout = find_detection_maps(tmp_path / "gc")
    assert layout == "gc-cases" and sorted(maps) == cases
    report = run_evaluation([tmp_path / "gc"], tmp_path / "labels", tmp_path / "report", n_bootstrap=0)
    expected = {s["name"]: s for s in data["sets"]}["max"]
    assert report.data["sets"][0]["auroc"] == pytest.approx(expected["auroc"], abs=1e-12)
    assert report.data["sets"][0]["ap"] == pytest.approx(expected["ap"], abs=1e-12)


# (e) comparison mode ---------------------------------------------------------------------------------------

def test_comparison_mode(tmp_path, random_run):
    dets, labels, _, _, _, _ = random_run
    for c in sorted(dets):
        worse = dets[c].copy()
        worse[worse > 0] = np.round(1.0 - worse[worse > 0], 2) + 0.01  # reversed ranking of the candidates
        write(worse, tmp_path / "worse" / f"{c}_detection_map.nii.gz")
        write(dets[c], tmp_path / "base" / f"{c}_detection_map.mha")
        write(labels[c], tmp_path / "labels" / f"{c}.nii.gz")
    out = tmp_path / "report"
    result = pdac_cli("evaluate", "--detections", str(tmp_path / "base"), str(tmp_path / "worse"),
                      str(tmp_path / "base"), "--names", "base", "worse", "same", "--labels", str(tmp_path / "labels"),
                      "--bootstrap", "200", "-o", str(out))
    assert result.returncode == 0, result.stderr
    data = json.loads((out / "metrics.json").read_text())
    comps = {c["set"]: c for c in data["comparisons"]}
    assert set(comps) == {"worse", "same"} and all(c["reference"] == "base" for c in comps.values())
    same = comps["same"]
    assert same["delta_auroc"] == 0 and same["delta_ap"] == 0
    assert same["p_auroc"] == 1.0 and same["p_ap"] == 1.0 and same["delta_auroc_ci"] == [0.0, 0.0]
    worse = comps["worse"]
    sets = {s["name"]: s for s in data["sets"]}
    assert worse["delta_auroc"] == pytest.approx(sets["worse"]["auroc"] - sets["base"]["auroc"])
    assert worse["delta_auroc"] < 0 and worse["delta_ap"] < 0
    assert 0 < worse["p_auroc"] < 0.5 and 0 < worse["p_ap"] < 0.5
    summary = (out / "summary.md").read_text()
    assert "| metric | base | worse | same |" in summary
    assert "| set | ΔAUROC [95% CI] | p (AUROC) |" in summary
    assert [line for line in summary.splitlines() if line.startswith("| same |")][0].count("| 1.000 |") == 4  # p values
    assert "| AUROC (patient) |" in result.stdout
    assert all(not math.isnan(s["auroc"]) for s in data["sets"])


def test_paired_bootstrap_p_values():
    """p is two-sided over the differences on the same resampled cases: 2 * min(P(d <= 0), P(d >= 0)), with
    (k + 1) / (n + 1) tail estimates."""
    from pdac.evaluation.bootstrap import _p_two_sided, bootstrap, bootstrap_samples
    from pdac.evaluation.metrics import evaluate_arrays

    assert _p_two_sided(np.array([-1.0] * 30 + [1.0] * 70)) == pytest.approx(2 * 31 / 101)
    assert _p_two_sided(np.array([1.0] * 100)) == pytest.approx(2 / 101)
    assert _p_two_sided(np.zeros(50)) == 1.0

    rng = np.random.default_rng(1)
    labels, good, noisy = {}, {}, {}
    for i in range(10):
        label = np.zeros(SHAPE, np.uint8)
        g = np.zeros(SHAPE, np.float32)
        b = np.zeros(SHAPE, np.float32)
        if i % 2:
            cube(label, *SLOTS[0], 1)
        cube(g, *SLOTS[0], 0.6 + 0.3 * (i % 2) + 0.01 * i)
        cube(b, *SLOTS[0], round(float(rng.uniform(0.1, 0.9)), 2))
        labels[f"c{i}"], good[f"c{i}"], noisy[f"c{i}"] = label, g, b
    a, b = evaluate_arrays(good, labels, name="good"), evaluate_arrays(noisy, labels, name="noisy")
    boot = bootstrap([a, b], n=150, seed=5)
    samples = bootstrap_samples(a.metrics.case_target, 150, seed=5)
    diffs = np.array([b.auroc_of(s) - a.auroc_of(s) for s in samples])
    k = len(diffs)
    expected = min(1.0, 2 * min((np.sum(diffs <= 0) + 1) / (k + 1), (np.sum(diffs >= 0) + 1) / (k + 1)))
    comp = boot["comparisons"][0]
    assert comp["p_auroc"] == pytest.approx(expected)
    assert comp["delta_auroc"] == pytest.approx(b.auroc - a.auroc) and comp["delta_auroc"] < 0
    assert comp["delta_auroc_ci"] == pytest.approx(list(np.percentile(diffs, [2.5, 97.5])))
    # false positives per case: "good" puts its cube on the lesion, "noisy" too, so both have one FP per
    # negative case; the paired differences are all zero
    assert a.fp_per_case == pytest.approx(0.5) and b.fp_per_case == pytest.approx(0.5)
    assert comp["delta_fp_per_case"] == 0 and comp["p_fp_per_case"] == 1.0


def test_fp_per_case_bootstrap_by_hand():
    """Set "fewer" drops the false positive of every negative case: ΔFP/case = -1 on every resample."""
    from pdac.evaluation.bootstrap import bootstrap, bootstrap_samples
    from pdac.evaluation.metrics import evaluate_arrays
    from pdac.evaluation.report import _fmt

    labels, many, fewer = {}, {}, {}
    for i in range(8):
        label, m, f = (np.zeros(SHAPE, np.uint8) for _ in range(3))
        m, f = m.astype(np.float32), f.astype(np.float32)
        if i % 2:
            cube(label, *SLOTS[0], 1)
            cube(m, *SLOTS[0], 0.8)
            cube(f, *SLOTS[0], 0.8)
        else:
            cube(m, *SLOTS[1], 0.5)
        labels[f"c{i}"], many[f"c{i}"], fewer[f"c{i}"] = label, m, f
    a, b = evaluate_arrays(many, labels, name="many"), evaluate_arrays(fewer, labels, name="fewer")
    assert (a.fp_per_case, b.fp_per_case) == (0.5, 0.0)
    boot = bootstrap([a, b], n=100, seed=3)
    samples = bootstrap_samples(a.metrics.case_target, 100, seed=3)
    expected = [-np.mean([int(c[1:]) % 2 == 0 for c in s]) for s in samples]  # minus the negatives' share
    comp = boot["comparisons"][0]
    assert comp["delta_fp_per_case"] == -0.5
    assert comp["delta_fp_per_case_ci"] == pytest.approx(list(np.percentile(expected, [2.5, 97.5])))
    assert comp["p_fp_per_case"] == pytest.approx(2 / 101)  # every resampled difference < 0
    assert _fmt(-0.0) == "0.000" and _fmt(-1e-9, [-1e-9, 0.5]) == "0.000 [0.000, 0.500]"
