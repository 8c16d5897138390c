"""report.html of `pdac detect --report` and of `pdac evaluate`, opened in headless Chromium (issue #18).

The browser checks (tests/browser.py) skip with a message where Chromium is missing; the Ctrl-C test reads the
HTML without a browser."""

from __future__ import annotations

import json
import logging
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
import SimpleITK as sitk
from browser import (
    assert_clean_page,
    check_sorting,
    chromium,
    image_is_not_blank,
    probe,
    requires_chromium,
    screenshot,
    table_rows,
)
from conftest import REPO, WEIGHTS, pdac, write_phantom

TRICKY = 'odd <b>&amp; "name"'  # a case name that must be escaped in the page and in its links


def links_exist(record: dict) -> list[Path]:
    files = [Path(unquote(urlparse(href).path)) for href in record["links"]]
    assert files and all(f.is_file() for f in files), [f for f in files if not f.is_file()]
    return files


# pdac detect --report ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def detect_run(tmp_path_factory, phantom_scans):
    """Two phantoms (one with a name full of markup) and one unreadable file, weights with a model card."""
    root = tmp_path_factory.mktemp("detect-report")
    weights = root / "weights"
    shutil.copytree(WEIGHTS, weights)
    card = json.loads((weights / "model.json").read_text()) | {"name": "pdac-demo", "version": "2026.1"}
    (weights / "model.json").write_text(json.dumps(card))
    assert pdac("weights-manifest", str(weights)).returncode == 0
    scans = root / "scans"
    scans.mkdir()
    shutil.copy(phantom_scans["identity"], scans / "plain_0000.mha")
    shutil.copy(phantom_scans["flipped"], scans / f"{TRICKY}_0000.mha")
    (scans / "broken_0000.mha").write_text("not an image")
    out = root / "out"
    result = pdac("detect", str(scans), "-o", str(out), "--report", "--overlays", "--weights", str(weights))
    assert result.returncode == 1, result.stderr  # one case failed
    return out, result


def test_detect_report_lists_every_case(detect_run):
    out, _ = detect_run
    html = (out / "report.html").read_text()
    tables = table_rows(html)
    likelihoods = json.loads((out / "pdac-likelihood.json").read_text())
    assert [row[0] for row in tables["cases"]] == sorted(likelihoods, key=lambda c: -likelihoods[c])
    for row in tables["cases"]:
        record = json.loads((out / f"{row[0]}_lesions.json").read_text())
        volumes = [le["volume_mm3"] for le in record["lesions"]]
        assert row[2] == f"{record['likelihood']:.3f}"  # row[1]: the overlay thumbnail
        assert row[3] == str(len(volumes))
        assert row[4] == (f"{max(volumes) / 1000:.2f}" if volumes else "–")
        assert row[5] == ("yes" if record["pancreas_found"] else "no")
    assert len(tables["failures"]) == 1 and tables["failures"][0][0] == "broken"
    assert "cannot read image" in tables["failures"][0][1]
    summary = " ".join(html.split('id="summary">')[1].split("</p>")[0].split())
    assert "3 cases: 2 done," in summary and "1 failed" in summary
    assert "model pdac-demo, version 2026.1, synthetic: yes" in summary
    assert "Interrupted" not in html
    assert "<b>&amp;" not in html and "&lt;b&gt;&amp;amp;" in html  # escaped, never markup
    assert not list(out.glob(".*.part*")), "temporary files left"


@requires_chromium
def test_detect_report_in_browser(detect_run, tmp_path):
    out, _ = detect_run
    record = probe(out / "report.html", tmp_path)
    assert_clean_page(record)
    assert len(record["tables"]["cases"]) == 2 and len(record["tables"]["failures"]) == 1
    assert {row[0] for row in record["tables"]["cases"]} == {"plain", TRICKY}
    assert len(record["images"]) == 2  # one overlay per case, decoded (checked above)
    assert record["thumbnail"]["open"] > 2 * record["thumbnail"]["closed"] > 0  # a click enlarges it
    check_sorting(record)
    files = links_exist(record)
    assert {f.name for f in files} >= {f"{TRICKY}_lesions.json", f"{TRICKY}_detection_map.mha", "plain_overlay.png"}
    shot = screenshot(out / "report.html", tmp_path / "detect-report.png", tmp_path)
    assert image_is_not_blank(shot)
    print(f"detect report: {(out / 'report.html').stat().st_size / 1e3:.0f} kB, loaded in {record['loadMs']:.0f} ms")


def test_detect_report_is_written_on_ctrl_c(tmp_path, phantom_scans):
    """Ctrl-C during the second case: exit 130 and a report of the cases done so far."""
    scans, out = tmp_path / "scans", tmp_path / "out"
    scans.mkdir()
    for i in range(4):
        shutil.copy(phantom_scans["identity"], scans / f"case{i}_0000.mha")
    log_file = tmp_path / "stderr.log"
    with log_file.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "pdac", "detect", str(scans), "-o", str(out), "--report"],
                                cwd=REPO, stdout=subprocess.DEVNULL, stderr=log, text=True)
        try:
            deadline = time.monotonic() + 600
            while "case0: likelihood" not in log_file.read_text():
                assert proc.poll() is None, log_file.read_text()
                assert time.monotonic() < deadline, "the first case did not finish"
                time.sleep(0.2)
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
    stderr = log_file.read_text()
    assert proc.returncode == 130, stderr
    rows = table_rows((out / "report.html").read_text())["cases"]
    reported = {row[0] for row in rows}
    logged = {f"case{i}" for i in range(4) if f"case{i}: likelihood" in stderr}
    written = {p.name.removesuffix("_lesions.json") for p in out.glob("*_lesions.json")}
    assert logged <= reported <= written and 1 <= len(reported) < 4
    html = (out / "report.html").read_text()
    assert f"Interrupted: {len(reported)} of 4 cases" in " ".join(html.split())
    assert not list(out.glob(".*.part*")), "temporary files left"


def test_report_shows_model_card_warnings_and_plausibility(tmp_path):
    """DetectReport directly: the pancreas plausibility record and warnings logged during a case appear in its
    row; a folder without model.json shows "unknown"; a second write replaces the file."""
    from pdac.infer.detect_report import DetectReport

    scan = sitk.GetImageFromArray(np.full((12, 24, 24), 40, np.float32))
    det = np.zeros((12, 24, 24), np.float32)
    det[5:8, 10:13, 10:13] = 0.7
    detection_map = sitk.GetImageFromArray(det)
    report = DetectReport(tmp_path, tmp_path / "weights", total_cases=3)
    for case, likelihood, pancreas in (("a", 0.2, {"plausible": False, "volume_ml": 3.25, "reasons": ["too small"]}),
                                       ("b", 0.7, {"plausible": True, "volume_ml": 71.5})):
        report.begin(case)
        logging.getLogger("pdac.infer.pipeline").warning("%s: no pancreas found; falling back", case)
        lesions = [{"volume_mm3": 27.0}] if likelihood > 0.5 else []
        report.add(case, scan, detection_map, {"likelihood": likelihood, "pancreas_found": False,
                                               "lesions": lesions, "pancreas": pancreas})
    report.begin("c")
    logging.getLogger("pdac.infer.pipeline").warning("c: a warning of a case that then fails")
    first = report.write({"c": "c.mha: cannot read image"})
    report.finish({"c": "c.mha: cannot read image"})
    html = first.read_text()
    rows = table_rows(html)["cases"]
    assert [r[0] for r in rows] == ["b", "a"]
    assert rows[0][4] == "0.03" and rows[1][4] == "–"  # largest candidate in mL (rows[i][1]: the thumbnail)
    assert rows[1][6].startswith("no") and "3.25 mL" in rows[1][6] and "too small" in rows[1][6]
    assert rows[0][6].startswith("yes")
    assert rows[0][7] == "no pancreas found; falling back" and "fails" not in html
    assert "model unknown, version unknown, synthetic: unknown" in " ".join(html.split())
    assert report._recorder not in logging.getLogger("pdac").handlers  # finish() stops collecting
    sharded = DetectReport(tmp_path, tmp_path / "weights", total_cases=1, shard=(1, 3))
    assert sharded.finish({}).name == "report.shard1of3.html"  # shards writing to one folder keep their reports
    assert "Interrupted: 0 of 1 cases" in " ".join(sharded.path.read_text().split())
    if chromium():
        record = probe(first, tmp_path)
        assert_clean_page(record)
        check_sorting(record)


# pdac evaluate -------------------------------------------------------------------------------------------------

@requires_chromium
def test_evaluate_report_in_browser(tmp_path):
    from test_evaluate import random_dataset, write

    dets, labels, _ = random_dataset(tmp_path)
    for c in sorted(dets):
        worse = dets[c].copy()
        worse[worse > 0] = np.round(1.0 - worse[worse > 0], 2) + 0.01
        write(worse, tmp_path / "worse" / f"{c}_detection_map.mha")
    out = tmp_path / "report"
    result = pdac("evaluate", "--detections", str(tmp_path / "det"), str(tmp_path / "worse"), "--names", "base",
                  "worse <i>", "--labels", str(tmp_path / "labels"), "--bootstrap", "50", "-o", str(out))
    assert result.returncode == 0, result.stderr
    record = probe(out / "report.html", tmp_path)
    assert_clean_page(record)
    tables = record["tables"]
    data = json.loads((out / "metrics.json").read_text())
    summary = (out / "summary.md").read_text().split("\n\n")
    md_rows = [[c.strip() for c in line.strip("|").split("|")] for line in summary[2].splitlines()[2:]]
    assert tables["metrics"] == md_rows  # the same numbers as summary.md, CIs included
    assert len(tables["comparisons"]) == 1 and tables["comparisons"][0][0] == "worse <i>"
    assert [img["alt"] for img in record["images"]] == ["Patient ROC", "Lesion precision-recall", "Lesion FROC"]
    for i, s in enumerate(data["sets"]):
        rows = tables[f"cases-{i}"]
        assert sorted(r[0] for r in rows) == sorted(dets)  # one row per case
        errors = [abs(s["cases"][r[0]]["target"] - s["cases"][r[0]]["prediction"]) for r in rows]
        assert errors == sorted(errors, reverse=True)  # worst first
        for r in rows:
            lesions = s["cases"][r[0]]["lesions"]
            truth = [e for e in lesions if e[0]]
            hits = sum(1 for e in truth if e[1] > 0)
            fps = sum(1 for e in lesions if not e[0] and e[1] > 0)
            assert r[1] == ("PDAC" if s["cases"][r[0]]["target"] else "no PDAC")
            assert r[3:7] == [str(len(truth)), str(hits), str(len(truth) - hits), str(fps)], r
    check_sorting(record)
    shot = screenshot(out / "report.html", tmp_path / "evaluate-report.png", tmp_path, size=(1280, 1400))
    assert image_is_not_blank(shot)
    assert "report.html" in result.stdout


# Size and opening time for a realistic batch ----------------------------------------------------------------------

@pytest.mark.slow
@requires_chromium
def test_detect_report_for_50_phantoms(tmp_path):
    scans = tmp_path / "scans"
    for i in range(50):
        write_phantom(scans / f"phantom_{i:02d}_0000.mha", 1000 + i, ("identity", "flipped", "oblique")[i % 3],
                      lesion=i % 2 == 0)
    out = tmp_path / "out"
    t0 = time.perf_counter()
    result = pdac("detect", str(scans), "-o", str(out), "--report", timeout=4 * 3600)
    detect_s = time.perf_counter() - t0
    assert result.returncode == 0, result.stderr[-3000:]
    size = (out / "report.html").stat().st_size
    record = probe(out / "report.html", tmp_path)
    print(f"\n50 phantoms: report.html {size / 1e6:.2f} MB; Chromium loaded it in {record['loadMs']:.0f} ms "
          f"(browser start to exit {record['wall_s']:.2f} s); detect took {detect_s / 60:.1f} min")
    assert size < 15e6
    assert_clean_page(record)
    assert len(record["tables"]["cases"]) == 50 and len(record["images"]) == 50
