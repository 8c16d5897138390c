"""`pdac detect --report`: report.html in the output folder, one self-contained page for the whole batch.

A summary line (cases, failures, model card, pdac version, date, times), the cases sorted by likelihood
(sortable by any column), each with its overlay thumbnail (click to enlarge) and a link to its viewer page
(`cases/<case>.html`, pdac.infer.case_viewer, written as the case finishes), and the failed cases with their
error. `DetectReport` collects the cases as the batch runs; `write` renders and replaces the file atomically, so
the batch can call it at the end and when it is interrupted."""

from __future__ import annotations

import dataclasses
import datetime
import logging
import time
from pathlib import Path

import SimpleITK as sitk

from pdac.errors import WeightsError
from pdac.html.page import duration, png_data_uri, render
from pdac.infer.io import write_text_atomic
from pdac.safe_read import read_json

log = logging.getLogger(__name__)

REPORT_NAME = "report.html"
MODEL_CARD = "model.json"
UNKNOWN = "unknown"
SYNTHETIC_WARNING = "These weights were trained on synthetic phantoms: the likelihoods say nothing about patients."

TEMPLATE = """{% extends "page.html" %}
{% block title %}pdac detect: {{ n_done }} of {{ n_total }} cases{% endblock %}
{% block body %}
<h1>pdac detect report</h1>
<p class="summary" id="summary">{{ n_total }} case{{ "s" if n_total != 1 else "" }}: {{ n_done }} done,
  <span{% if failures %} class="high"{% endif %}>{{ failures|length }} failed</span>
  &middot; model {{ model.name }}, version {{ model.version }}, synthetic: {{ model.synthetic }}
  &middot; pdac {{ pdac_version }} &middot; {{ date }}
  &middot; {{ total_time }} in all{% if per_case_time %}, {{ per_case_time }} per case{% endif %}</p>
<p class="note">Weights: {{ weights }}</p>
{% if interrupted %}
<p class="warn" id="interrupted">Interrupted: {{ n_done + failures|length }} of {{ n_total }} cases were processed
  before the run stopped; this report shows those.</p>
{% endif %}
{% if model.synthetic == "yes" %}
<p class="warn">{{ synthetic_warning }}</p>
{% endif %}

<h2>Cases, most suspicious first</h2>
<p class="note">Click a column header to sort; click a thumbnail to enlarge it (axial and coronal views through
  the most suspicious candidate, detection map over the CT); click a case to open its viewer (three planes,
  scrolling, the lesion list).</p>
<table class="sortable" id="cases">
<thead><tr>
  <th data-sort="text">case</th>
  <th>overlay</th>
  <th data-sort="num" class="num" aria-sort="descending">likelihood</th>
  <th data-sort="num" class="num">candidates</th>
  <th data-sort="num" class="num">largest candidate (mL)</th>
  <th data-sort="text">pancreas found</th>
  {% if show_plausibility %}<th data-sort="text">pancreas plausible</th>{% endif %}
  <th data-sort="text">warnings</th>
  <th data-sort="num" class="num">time (s)</th>
  <th>files</th>
</tr></thead>
<tbody>
{% for e in entries %}
<tr>
  <td>{% if e.viewer %}<a href="{{ e.viewer }}" title="open the case viewer">{{ e.case }}</a>{% else %}{{ e.case }}
    {% endif %}</td>
  <td>{% if e.overlay %}<details class="overlay"><summary><img src="{{ e.overlay }}"
      alt="{{ e.case }}: axial and coronal views"></summary></details>{% else %}<span class="muted">–</span>
      {% endif %}</td>
  <td class="num" data-value="{{ e.likelihood }}">{{ e.likelihood|number }}</td>
  <td class="num">{{ e.candidates }}</td>
  <td class="num" data-value="{{ e.largest_ml if e.largest_ml is not none else '' }}">{{ e.largest_ml|number(2) }}</td>
  <td>{{ "yes" if e.pancreas_found else "no" }}</td>
  {% if show_plausibility %}
  <td>{{ e.plausible }}{% if e.plausibility_details %}<div class="small muted">{{ e.plausibility_details }}</div>
  {% endif %}</td>
  {% endif %}
  <td class="small">{% for w in e.warnings %}<div>{{ w }}</div>{% endfor %}</td>
  <td class="num" data-value="{{ e.seconds }}">{{ "%.1f"|format(e.seconds) }}</td>
  <td class="small">{% for label, name in e.files %}<a href="{{ name|urlencode }}" title="{{ name }}">{{ label }}</a>
    {% if not loop.last %} &middot; {% endif %}{% endfor %}</td>
</tr>
{% endfor %}
</tbody>
</table>

{% if failures %}
<h2>Failed cases</h2>
<table id="failures">
<thead><tr><th>case</th><th>error</th></tr></thead>
<tbody>
{% for case, message in failures %}
<tr><td>{{ case }}</td><td>{{ message }}</td></tr>
{% endfor %}
</tbody>
</table>
{% endif %}
{% endblock %}
"""


@dataclasses.dataclass
class CaseEntry:
    case: str
    likelihood: float
    candidates: int
    largest_ml: float | None
    pancreas_found: bool
    plausibility: object | None  # the lesion list's "pancreas" record, when the pipeline writes one
    warnings: list[str]
    files: list[tuple[str, str]]  # (link text, name in the output folder)
    overlay: str | None  # data URI
    seconds: float
    viewer: str | None = None  # link to the case's viewer page

    @property
    def plausible(self) -> str:
        p = self.plausibility
        if isinstance(p, dict) and isinstance(p.get("plausible"), bool):
            return "yes" if p["plausible"] else "no"
        return "–" if p is None else UNKNOWN

    @property
    def plausibility_details(self) -> str:
        """Volume, median HU and the reasons (the rest of the record stays in the lesion list)."""
        p = self.plausibility
        if not isinstance(p, dict):
            return "" if p is None else _short(p)
        parts = [f"{_short(p[k])} {unit}" for k, unit in (("volume_ml", "mL"), ("median_hu", "HU median"))
                 if isinstance(p.get(k), int | float)]
        reasons = p.get("reasons")
        return "; ".join(parts + ([_short(reasons)] if reasons else []))


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list | tuple):
        return "; ".join(map(_short, value))
    return str(value)


def read_model_card(weights_dir: Path) -> dict[str, str]:
    """name, version and synthetic flag from `<weights>/model.json`, "unknown" for what it does not say."""
    card = {}
    path = Path(weights_dir) / MODEL_CARD
    if path.is_file():
        try:
            card = read_json(path, WeightsError, max_bytes=1024 * 1024)
        except WeightsError as e:
            log.warning("unreadable model card (%s)", e)
        card = card if isinstance(card, dict) else {}
    synthetic = card.get("synthetic")
    return {
        "name": str(card.get("name") or UNKNOWN),
        "version": str(card.get("version") or UNKNOWN),
        "synthetic": {True: "yes", False: "no"}.get(synthetic, UNKNOWN) if isinstance(synthetic, bool) else UNKNOWN,
    }


class _WarningRecorder(logging.Handler):
    """Warnings logged by pdac while a case runs, for that case's row."""

    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


class DetectReport:
    """Collects the cases of a `pdac detect` run; `write` renders report.html (atomically, any number of times)."""

    def __init__(self, out: Path, weights_dir: Path, total_cases: int, shard: tuple[int, int] | None = None,
                 viewer: bool = True):
        self.out = Path(out)
        self.path = self.out / (REPORT_NAME if not shard else f"report.shard{shard[0]}of{shard[1]}.html")
        self.viewer = viewer
        self.weights_dir = Path(weights_dir)
        self.model = read_model_card(weights_dir)
        self.total_cases = total_cases
        self.entries: list[CaseEntry] = []
        self.started = time.perf_counter()
        self.date = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z").strip()
        self._case_started = self.started
        self._recorder = _WarningRecorder()
        logging.getLogger("pdac").addHandler(self._recorder)

    def begin(self, case: str) -> None:
        """A new case starts: its warnings and its time count from here."""
        self._recorder.messages.clear()
        self._case_started = time.perf_counter()

    def add(self, case: str, scan: sitk.Image, detection_map: sitk.Image, record: dict,
            pancreas_mask: sitk.Image | None = None) -> None:
        """A case is done; `record` is what its lesion list (`<case>_lesions.json`) holds, `pancreas_mask` stage 1's
        mask (for the viewer page)."""
        volumes = [le["volume_mm3"] for le in record.get("lesions", [])]
        warnings = [m[len(case) + 2:] if m.startswith(f"{case}: ") else m for m in self._recorder.messages]
        extra = record.get("warnings")
        warnings += [str(w) for w in extra] if isinstance(extra, list) else []
        try:
            from pdac.infer.overlay import detection_overlay_png

            overlay = png_data_uri(detection_overlay_png(
                scan, detection_map, f"{case}: PDAC likelihood {record['likelihood']:.3f}"))
        except Exception as e:  # noqa: BLE001 - a thumbnail must not fail a case whose outputs are written
            log.warning("%s: no overlay for the report (%s: %s)", case, type(e).__name__, e)
            overlay = None
        files = (("map", f"{case}_detection_map.mha"), ("lesions", f"{case}_lesions.json"),
                 ("overlay", f"{case}_overlay.png"))
        viewer = self._viewer_page(case, scan, detection_map, record, pancreas_mask, warnings) if self.viewer else None
        self.entries.append(CaseEntry(
            case=case, likelihood=float(record["likelihood"]), candidates=len(volumes),
            largest_ml=max(volumes) / 1000 if volumes else None, pancreas_found=bool(record.get("pancreas_found")),
            plausibility=record.get("pancreas"), warnings=warnings,
            files=[(k, n) for k, n in files if (self.out / n).is_file()], overlay=overlay,
            seconds=time.perf_counter() - self._case_started, viewer=viewer))

    def _viewer_page(self, case: str, scan: sitk.Image, detection_map: sitk.Image, record: dict,
                     pancreas_mask: sitk.Image | None, warnings: list[str]) -> str | None:
        """Write `cases/<case>.html`; its link (None when it could not be made: the case itself is done)."""
        from pdac.infer.case_viewer import detect_case_page, page_href, page_name

        try:
            page = detect_case_page(case, scan, detection_map, record, pancreas_mask, warnings,
                                    banners=[SYNTHETIC_WARNING] if self.model["synthetic"] == "yes" else [],
                                    report_href=f"../{self.path.name}")
            path = self.out / page_name(case)
            path.parent.mkdir(exist_ok=True)
            write_text_atomic(page.html, path)
        except Exception as e:  # noqa: BLE001 - a viewer page must not fail a case whose outputs are written
            log.warning("%s: no viewer page (%s: %s)", case, type(e).__name__, e)
            return None
        stats = page.stats
        log.info("%s: viewer page %s (%.1f MB, %s voxels%s)", case, path, stats.size_bytes / 1e6,
                 "x".join(map(str, stats.grid_size)),
                 "" if stats.factors == (1, 1, 1) else f", shrunk {'x'.join(map(str, stats.factors))}")
        return page_href(case)

    def html(self, failures: dict[str, str]) -> str:
        entries = sorted(self.entries, key=lambda e: (-e.likelihood, e.case))
        processed = len(entries) + len(failures)
        return render(
            TEMPLATE, entries=entries, failures=sorted(failures.items()), n_done=len(entries),
            n_total=self.total_cases, interrupted=processed < self.total_cases, model=self.model,
            weights=str(self.weights_dir), date=self.date, total_time=duration(time.perf_counter() - self.started),
            per_case_time=duration(sum(e.seconds for e in entries) / len(entries)) if entries else "",
            show_plausibility=any(e.plausibility is not None for e in entries), synthetic_warning=SYNTHETIC_WARNING)

    def write(self, failures: dict[str, str]) -> Path:
        """Render and atomically replace report.html."""
        write_text_atomic(self.html(failures), self.path)
        log.info("report -> %s", self.path)
        return self.path

    def finish(self, failures: dict[str, str]) -> Path:
        """The last `write`: also stops collecting warnings."""
        try:
            return self.write(failures)
        finally:
            logging.getLogger("pdac").removeHandler(self._recorder)
