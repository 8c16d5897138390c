"""Case viewer pages (`cases/<case>.html`): one self-contained page per case with the scan, its overlays (detection
map, stage-1 pancreas, reference label) and its lesion list, shown by NiiVue (vendored, `vendor/niivue/`) in
three planes: slice scrolling (mouse wheel, arrow keys), window presets and width / level, overlay opacity and
on/off, and a click on a lesion moves every view to its centroid.

Everything the page needs is inside it: NiiVue's built file, the volumes as base64 .nii.gz (`volumes`), the case
data as JSON (escaped by Jinja's `tojson`) and `viewer.js`, which wires the controls. The page keeps the reports'
Content-Security-Policy (no fetches of any kind) and a size budget (`PAGE_BUDGET_BYTES`): the region is shown at
full resolution when it fits, otherwise on a coarser grid, which the page states."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import logging
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from pdac.html import volumes as vol
from pdac.html.page import render

log = logging.getLogger(__name__)

VENDOR = Path(__file__).resolve().parent / "vendor" / "niivue"
NIIVUE_VERSION = "0.69.0"
NIIVUE_SHA256 = "47b896b77ec4a5be3ef1949c33ad393b6f45629921f326c279000bcf51bdb4af"
VIEWER_JS = Path(__file__).resolve().parent / "viewer.js"

PAGE_BUDGET_BYTES = 10_000_000  # per page, NiiVue (2.3 MB) included
MAX_VOXELS = 24_000_000  # never compress more than this before the budget check
# (name, width, level) in HU; the first is the page's initial window.
WINDOWS = (("abdomen", 400, 40), ("pancreas (narrow)", 250, 60), ("liver", 150, 30),
           ("every stored value", int(vol.CT_MAX_HU - vol.CT_MIN_HU), int((vol.CT_MAX_HU + vol.CT_MIN_HU) / 2)))


@dataclasses.dataclass(frozen=True)
class Overlay:
    """A volume over the CT. kind "map": values in [0, 1] on a colour scale (0 transparent); kind "label":
    integer labels drawn as outlines in `colours` ({value: (name, "#rrggbb")}); `priority` orders the labels
    when a coarser grid must pick one per block (first wins; default: `colours`' order)."""

    key: str
    title: str
    image: sitk.Image
    kind: str
    visible: bool = True
    colours: dict[int, tuple[str, str]] = dataclasses.field(default_factory=dict)
    priority: tuple[int, ...] = ()
    opacity: float = 0.5


@dataclasses.dataclass(frozen=True)
class Finding:
    """One row of the lesion list: `centroid_mm` is in the scan's world coordinates (ITK / LPS, as in the
    lesion lists); a click moves the views there."""

    group: str
    name: str
    centroid_mm: tuple[float, float, float]
    likelihood: float | None = None
    volume_ml: float | None = None


@dataclasses.dataclass(frozen=True)
class PageStats:
    size_bytes: int
    grid_size: tuple[int, int, int]  # x, y, z voxels on the page
    spacing_mm: tuple[float, float, float]
    factors: tuple[int, int, int]  # shrink factors against the scan (1, 1, 1: full resolution)
    box: vol.Box
    volume_bytes: dict[str, int]  # compressed .nii.gz bytes per volume
    over_budget: bool


class PageTooLarge(ValueError):
    """The page would break its size budget even on the coarsest grid tried."""


@dataclasses.dataclass(frozen=True)
class CasePage:
    html: str
    stats: PageStats


@cache
def niivue_js() -> str:
    """NiiVue's built file, checked against the recorded checksum (a changed file fails loudly)."""
    data = (VENDOR / "niivue.umd.js").read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != NIIVUE_SHA256:
        raise RuntimeError(f"{VENDOR / 'niivue.umd.js'}: sha256 {digest} is not the vendored NiiVue "
                           f"{NIIVUE_VERSION} ({NIIVUE_SHA256}); see {VENDOR / 'README.md'}")
    return _inline_script(data.decode("utf-8"), "niivue.umd.js")


def _inline_script(text: str, name: str) -> str:
    """Script text that can sit inside <script>...</script> unchanged."""
    lowered = text.lower()
    if "</script" in lowered or "<!--" in lowered:
        raise RuntimeError(f"{name} cannot be inlined in a <script> element")
    return text


def _rgb(colour: str) -> list[int]:
    colour = colour.lstrip("#")
    return [int(colour[i:i + 2], 16) for i in (0, 2, 4)]


def _budgeted_volumes(scan: sitk.Image, box: vol.Box, overlays: Sequence[Overlay], budget_bytes: int,
                      fixed_bytes: int):
    """(grid, factors, {id: .nii.gz bytes}) for the largest grid whose page fits the budget (up to six tries, each
    coarser than the last; the last one is returned even if it is still too large: `case_page` refuses it)."""
    max_voxels = MAX_VOXELS
    factors: tuple[int, int, int] | None = None
    for _ in range(6):
        new = vol.shrink_factors(scan.GetSpacing(), box.size, max_voxels)
        if factors is not None and new == factors:
            break  # cannot get any coarser
        factors = new
        grid = vol.ct_grid(scan, box, factors)
        ct = sitk.GetArrayViewFromImage(grid)
        encoded = {"ct": vol.nifti_gz(vol.quantised_ct(ct), grid, vol.CT_STEP_HU, vol.CT_MIN_HU)}
        for o in overlays:
            array = vol.overlay_on_grid(o.image, scan, box, factors, grid, o.kind, o.priority or tuple(o.colours))
            if o.kind == "map":
                encoded[o.key] = vol.nifti_gz(np.clip(array, 0, 1).astype(np.float32), grid)
            else:
                encoded[o.key] = vol.nifti_gz(array.astype(np.uint8), grid, label=True)
        total = fixed_bytes + sum(4 * ((len(b) + 2) // 3) for b in encoded.values())
        if total <= budget_bytes:
            break
        voxels = int(np.prod(grid.GetSize(), dtype=np.int64))
        room = max(budget_bytes - fixed_bytes, budget_bytes // 10)
        max_voxels = max(1, min(voxels - 1, int(voxels * room / (total - fixed_bytes) * 0.9)))
    return grid, factors, encoded


def _box_text(box: vol.Box, scan: sitk.Image) -> str:
    ranges = ", ".join(f"{axis} {s}–{s + n - 1}" for axis, s, n in zip("xyz", box.start, box.size, strict=True))
    full = "x".join(str(n) for n in scan.GetSize())
    return f"index {ranges} of the scan's {full} voxels"


def case_page(case: str, scan: sitk.Image, *, heading: str, region: str, box: vol.Box | None = None,
              overlays: Sequence[Overlay] = (), findings: Sequence[Finding] = (), facts: Sequence[str] = (),
              banners: Sequence[str] = (), warnings: Sequence[str] = (), back: tuple[str, str] | None = None,
              budget_bytes: int = PAGE_BUDGET_BYTES) -> CasePage:
    """The viewer page of one case. `overlays` lie on any grid (those on the scan's own grid are cut, the
    others resampled); `region` says in words what `box` (default: the whole scan) is; `facts` are short lines
    under the heading; `banners` and `warnings` appear above the viewer; `back` is (href, text) of a link back."""
    box = (box or vol.Box.whole(scan)).clipped(scan)
    overlays = sorted(overlays, key=lambda o: o.kind != "map")  # maps first (see viewer.js: applyOverlay)
    viewer_js = _inline_script(VIEWER_JS.read_text(encoding="utf-8"), "viewer.js")
    fixed = len(niivue_js().encode()) + len(viewer_js.encode()) + 40_000
    grid, factors, encoded = _budgeted_volumes(scan, box, overlays, budget_bytes, fixed)
    spacing = tuple(float(s) for s in grid.GetSpacing())
    ids = {key: f"volume-{i}" for i, key in enumerate(encoded)}
    window = WINDOWS[0]
    data = {
        "case": case,
        "ct": {"id": ids["ct"], "cal_min": window[2] - window[1] / 2, "cal_max": window[2] + window[1] / 2},
        "windows": [{"name": n, "width": w, "level": lv} for n, w, lv in WINDOWS],
        "overlays": [{
            "key": o.key, "title": o.title, "id": ids[o.key], "kind": o.kind, "visible": o.visible,
            "opacity": o.opacity,
            "labels": [{"value": int(v), "name": n, "rgb": _rgb(c)} for v, (n, c) in o.colours.items()],
        } for o in overlays],
        "findings": [{
            "group": f.group, "name": f.name, "lps": [round(float(v), 2) for v in f.centroid_mm],
            "ras": [-float(f.centroid_mm[0]), -float(f.centroid_mm[1]), float(f.centroid_mm[2])],
        } for f in findings],
    }
    sizes = {key: len(b) for key, b in encoded.items()}
    full_resolution = all(f == 1 for f in factors)
    holds = [
        f"Region: {region} ({_box_text(box, scan)}).",
        ("Shown at the scan's full resolution" if full_resolution else
         f"Shown on a coarser grid than the scan (blocks of {'x'.join(map(str, factors))} voxels averaged, to keep "
         f"the page under {budget_bytes / 1e6:.0f} MB; lesions and labels are kept in every block they touch)")
        + f": {'x'.join(str(n) for n in grid.GetSize())} voxels of "
          f"{' x '.join(f'{s:.2f}' for s in spacing)} mm.",
        f"CT stored in {vol.CT_STEP_HU:g} HU steps from {vol.CT_MIN_HU:g} to {vol.CT_MAX_HU:g} HU (values outside are "
        "clipped); overlays as they are.",
        "Volumes embedded (compressed NIfTI): "
        + ", ".join(f"{key} {n / 1e6:.2f} MB" for key, n in sizes.items()) + "; page size @@PAGE_SIZE@@.",
        f"Viewer: NiiVue {NIIVUE_VERSION} (BSD-2-Clause, embedded; nothing is fetched).",
    ]
    html = render(
        TEMPLATE, case=case, heading=heading, facts=list(facts), banners=list(banners), warnings=list(warnings),
        back=back, overlays=data["overlays"], findings=list(findings), holds=holds, windows=WINDOWS, data=data,
        volumes=[(ids[key], base64.b64encode(b).decode("ascii")) for key, b in encoded.items()],
        niivue=niivue_js(), viewer_js=viewer_js, groups=len({f.group for f in findings}) > 1)
    size = len(html.encode("utf-8"))
    html = html.replace("@@PAGE_SIZE@@", f"{size / 1e6:.1f} MB", 1)
    stats = PageStats(size_bytes=len(html.encode("utf-8")), grid_size=tuple(int(n) for n in grid.GetSize()),
                      spacing_mm=spacing, factors=factors, box=box, volume_bytes=sizes,
                      over_budget=size > budget_bytes)
    if stats.over_budget:
        raise PageTooLarge(f"the viewer page would be {size / 1e6:.1f} MB even on a {'x'.join(map(str, factors))} "
                           f"coarser grid ({'x'.join(map(str, stats.grid_size))} voxels), over its budget of "
                           f"{budget_bytes / 1e6:.1f} MB: no page written")
    return CasePage(html, stats)


TEMPLATE = """{% extends "page.html" %}
{% block title %}{{ case }}: case viewer{% endblock %}
{% block head %}
<style>
.viewer { display: flex; flex-wrap: wrap; gap: 1rem; align-items: flex-start; }
.views { flex: 1 1 680px; min-width: 480px; }
#gl-box { width: 100%; height: 560px; }
#gl { display: block; background: #000; outline: none; }
#gl:focus-visible { outline: 2px solid #0b5cad; }
.panel { flex: 1 1 380px; max-width: 560px; min-width: 0; overflow-x: auto; }
.panel h3 { margin-top: .2rem; }
.panel label { display: inline-block; margin: .15rem 0; }
.panel input[type=number] { width: 5em; }
.overlay-row { margin: .3rem 0; }
.swatch { display: inline-block; width: .8em; height: .8em; border-radius: 2px; margin-right: .2em;
          vertical-align: middle; }
#findings button { font: inherit; cursor: pointer; padding: .05rem .5rem; }
#findings tr.current td { background: #e8f1fb; }
#status { color: #b3261e; }
p.banner { font-weight: 600; }
</style>
{% endblock %}
{% block body %}
{% if back %}<p class="small"><a href="{{ back[0] }}">&larr; {{ back[1] }}</a></p>{% endif %}
<h1>{{ heading }}</h1>
{% for line in facts %}<p class="summary">{{ line }}</p>
{% endfor %}
{% for b in banners %}<p class="warn banner">{{ b }}</p>
{% endfor %}
{% if warnings %}
<div class="warn" id="warnings"><strong>Warnings</strong>
{% for w in warnings %}<div>{{ w }}</div>
{% endfor %}</div>
{% endif %}
<p id="status" role="status"></p>
<div class="viewer">
<div class="views">
  <div id="gl-box"><canvas id="gl" tabindex="0" aria-label="axial, coronal and sagittal views"></canvas></div>
  <p class="small muted" id="location">&nbsp;</p>
  <p class="note">Radiological convention (the patient's right on the left of axial and coronal views).
    Scroll a view with the mouse wheel, or with the arrow keys / Page Up / Page Down in the view last pointed at
    (axial at first); click to move the crosshair; drag with the right mouse button to change the window.</p>
</div>
<div class="panel">
  <h3>Window</h3>
  <label>preset <select id="window-preset">
  {% for name, width, level in windows %}
    <option value="{{ loop.index0 }}">{{ name }} (W {{ width }}, L {{ level }})</option>
  {% endfor %}</select></label><br>
  <label>width <input type="number" id="window-width" min="1" step="10" value="{{ windows[0][1] }}"></label>
  <label>level <input type="number" id="window-level" step="10" value="{{ windows[0][2] }}"></label> HU
  <h3>Overlays</h3>
  {% for o in overlays %}
  <div class="overlay-row" data-overlay="{{ loop.index0 }}">
    <label><input type="checkbox" class="overlay-visible"{% if o.visible %} checked{% endif %}> {{ o.title }}</label>
    <label class="small">opacity <input type="range" class="overlay-opacity" min="0" max="1" step="0.05"
      value="{{ o.opacity }}"></label>
    {% if o.labels %}<div class="small">{% for lab in o.labels %}<span class="swatch"
      style="background: rgb({{ lab.rgb|join(',') }})"></span>{{ lab.name }} {% endfor %}</div>{% endif %}
  </div>
  {% else %}<p class="muted">none</p>
  {% endfor %}
  <h3>Lesions</h3>
  {% if findings %}
  <table id="findings">
  <thead><tr>{% if groups %}<th>kind</th>{% endif %}<th>#</th><th class="num">likelihood</th>
    <th class="num">volume (mL)</th><th>centroid (mm, x y z)</th></tr></thead>
  <tbody>
  {% for f in findings %}
  <tr data-finding="{{ loop.index0 }}">
    {% if groups %}<td class="small">{{ f.group }}</td>{% endif %}
    <td><button type="button" title="move the views to this centroid">{{ f.name }}</button></td>
    <td class="num">{{ f.likelihood|number }}</td>
    <td class="num">{{ f.volume_ml|number(2) }}</td>
    <td class="small">{{ f.centroid_mm|map("round", 1)|join(" ") }}</td>
  </tr>
  {% endfor %}
  </tbody>
  </table>
  <p class="note">Click a row's number to move every view to its centroid (world coordinates as in the lesion
    list: ITK / LPS).</p>
  {% else %}<p class="muted">No lesion candidates.</p>
  {% endif %}
</div>
</div>
<h2>What this page holds</h2>
<ul class="small" id="holds">
{% for line in holds %}<li>{{ line }}</li>
{% endfor %}
</ul>
{% for id, b64 in volumes %}
<script type="application/octet-stream" id="{{ id }}">{{ b64|safe }}</script>
{% endfor %}
<script type="application/json" id="viewer-data">{{ data|tojson }}</script>
{% endblock %}
{% block scripts %}
<script>{{ niivue|safe }}</script>
<script>{{ viewer_js|safe }}</script>
{% endblock %}
"""
