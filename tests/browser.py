"""Headless Chromium for the HTML report tests: open a report from disk and say what the page saw; screenshots.

`probe(report)` copies the report next to itself with a small script in front of everything else, opens it
with `--dump-dom`, and reads back a JSON record that the script writes into the page once it has loaded:
errors (uncaught exceptions, console.error/warn, failed loads, Content-Security-Policy violations), the rows
of every table with an id, the links, every image's decoded (natural) size, the order of each sortable column after one
and two clicks on its header, a thumbnail's height before and after it is opened, and the load time.
No DevTools client and no downloads: Debian's chromium package is enough."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
         "--mute-audio", "--enable-logging=stderr", "--v=0"]


def chromium() -> str | None:
    return os.environ.get("PDAC_CHROMIUM") or next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)


requires_chromium = pytest.mark.skipif(
    chromium() is None,
    reason="Chromium not found (Debian: apt-get install chromium; .ci/run installs it; or set PDAC_CHROMIUM): "
           "the HTML reports were NOT checked in a browser")

PROBE = """<script>
(() => {
  const errors = [];
  addEventListener("error", e => errors.push(e.message || `failed to load ${e.target.tagName} ${e.target.src || ""}`),
                   true);
  addEventListener("unhandledrejection", e => errors.push(`unhandled rejection: ${e.reason}`));
  addEventListener("securitypolicyviolation", e => errors.push(`CSP: ${e.violatedDirective} ${e.blockedURI}`));
  for (const level of ["error", "warn"]) {
    const original = console[level];
    console[level] = (...args) => {
      errors.push(`console.${level}: ${args.join(" ")}`);
      original.apply(console, args);
    };
  }
  const cellValue = cell => cell.dataset.value ?? cell.textContent.trim();
  const column = (table, i) => Array.from(table.tBodies[0].rows, row => cellValue(row.cells[i]));
  addEventListener("load", () => {
    const loadMs = performance.now();
    const tables = {};
    for (const t of document.querySelectorAll("table[id]")) {
      tables[t.id] = Array.from(t.tBodies[0].rows, row => Array.from(row.cells, c => c.textContent.trim()));
    }
    const images = Array.from(document.images, i => ({complete: i.complete, width: i.naturalWidth,
                                                      height: i.naturalHeight, alt: i.alt}));
    let thumbnail = null;
    const details = document.querySelector("details.overlay");
    if (details) {
      const img = details.querySelector("img"), closed = img.getBoundingClientRect().height;
      details.open = true;
      thumbnail = {closed, open: img.getBoundingClientRect().height};
      details.open = false;
    }
    const sorting = [];
    for (const t of document.querySelectorAll("table.sortable[id]")) {
      for (const th of t.querySelectorAll("th[data-sort]")) {
        th.click();
        const first = {order: th.getAttribute("aria-sort"), values: column(t, th.cellIndex)};
        th.click();
        const second = {order: th.getAttribute("aria-sort"), values: column(t, th.cellIndex)};
        sorting.push({table: t.id, header: th.textContent.trim(), type: th.dataset.sort, clicks: [first, second]});
      }
    }
    const out = document.createElement("pre");
    out.id = "pdac-probe";
    out.textContent = JSON.stringify({errors, tables, images, thumbnail, sorting, loadMs, title: document.title,
      links: Array.from(document.links, a => a.href),
      resources: performance.getEntriesByType("resource").map(r => r.name)});
    document.body.appendChild(out);
  });
})();
</script>
"""


def _run(args: list[str], timeout: int = 120) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    return result, time.perf_counter() - t0


def probe(report: Path, work: Path) -> dict:
    """Open `report` (a copy with the probe script in front) in headless Chromium; the probe's record, plus
    `wall_s` (browser start to exit) and `console` (the browser's console lines from stderr)."""
    text = Path(report).read_text(encoding="utf-8")
    head = re.search(r"<head>", text)
    assert head, "the report has no <head>"
    probed = Path(report).with_name(f".probe-{Path(report).name}")  # beside it: relative links stay valid
    probed.write_text(text[:head.end()] + PROBE + text[head.end():], encoding="utf-8")
    try:
        result, wall = _run([chromium(), *FLAGS, f"--user-data-dir={work / 'chromium-profile'}",
                             "--virtual-time-budget=5000", "--dump-dom", probed.resolve().as_uri()])
    finally:
        probed.unlink()
    found = re.search(r'<pre id="pdac-probe">(.*?)</pre>', result.stdout, re.S)
    assert found, f"the probe did not report (chromium exit {result.returncode}):\n{result.stderr[-3000:]}"
    record = json.loads(html.unescape(found.group(1)))
    record["wall_s"] = wall
    record["console"] = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    return record


def screenshot(report: Path, png: Path, work: Path, size: tuple[int, int] = (1280, 900)) -> Path:
    result, _ = _run([chromium(), *FLAGS, f"--user-data-dir={work / 'chromium-shot-profile'}",
                      f"--window-size={size[0]},{size[1]}", f"--screenshot={png}", Path(report).resolve().as_uri()])
    assert png.is_file(), f"no screenshot (chromium exit {result.returncode}):\n{result.stderr[-3000:]}"
    return png


def check_sorting(record: dict) -> None:
    """Every sortable column, clicked once and twice, is in order one way and then the other."""
    assert record["sorting"], "no sortable columns"

    def key(kind, value):
        if kind == "num":
            try:
                return float(value)
            except ValueError:
                return float("-inf")
        return value.lower()

    for column in record["sorting"]:
        for click in column["clicks"]:
            keys = [key(column["type"], v) for v in click["values"]]
            expected = sorted(keys, reverse=click["order"] == "descending")
            assert keys == expected, (column["table"], column["header"], click)
        assert {c["order"] for c in column["clicks"]} == {"ascending", "descending"}


def assert_clean_page(record: dict) -> None:
    """Loaded without errors, fetched nothing, and every image decoded."""
    assert record["errors"] == [], record["errors"]
    assert not [line for line in record["console"] if "Uncaught" in line or "Refused" in line], record["console"]
    assert record["resources"] == [], f"the report fetched resources: {record['resources']}"
    assert record["images"], "no images"
    for image in record["images"]:
        assert image["complete"] and image["width"] > 0 and image["height"] > 0, image


def image_is_not_blank(png: Path) -> bool:
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(png).convert("L"), dtype=np.float32)
    return pixels.std() > 5


class _Tables(HTMLParser):
    """Rows (cell texts) of the body of every table with an id, without a browser."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._table = None
        self._in_body = False
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and "id" in attrs:
            self._table = self.tables.setdefault(attrs["id"], [])
        elif tag == "tbody" and self._table is not None:
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self._table.append([])
        elif tag == "td" and self._in_body:
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self._table[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tbody":
            self._in_body = False
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def table_rows(report_html: str) -> dict[str, list[list[str]]]:
    parser = _Tables()
    parser.feed(report_html)
    return parser.tables
