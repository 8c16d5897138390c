"""The page skeleton of pdac's HTML pages (the reports and the case viewer pages): one self-contained file
(inline CSS, a few lines of vanilla JS to sort tables by a column, images as data URIs) that opens offline and
can be attached to an email.

Report modules write their body as a Jinja2 template that extends "page.html" (blocks `title` and `body`; `head`
and `scripts` add styles and scripts);
autoescaping is on, so case names and error messages cannot inject markup."""

from __future__ import annotations

import base64
import math

# The Content-Security-Policy forbids every fetch (scripts, styles, fonts, images other than data: URIs), so
# a report that is not self-contained fails loudly in the browser instead of phoning home.
PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
      content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="pdac {{ pdac_version }}">
<title>{% block title %}{% endblock %}</title>
<style>
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; margin: 1.5rem 2rem;
       color: #1d2125; background: #fff; font-size: 14px; }
h1 { font-size: 1.45rem; margin: 0 0 .4rem; }
h2 { font-size: 1.15rem; margin: 1.6rem 0 .5rem; }
h3 { font-size: 1rem; margin: 1.2rem 0 .4rem; }
p.summary { margin: .2rem 0; color: #3d4349; }
p.note { color: #5d656c; font-size: .9em; }
.warn { background: #fff4d6; border-left: 4px solid #e0a800; padding: .4rem .7rem; }
table { border-collapse: collapse; margin: .4rem 0 1rem; }
th, td { border-bottom: 1px solid #dde1e4; padding: .3rem .6rem; text-align: left; vertical-align: top; }
th { background: #f3f5f7; font-weight: 600; white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.sortable th[data-sort] { cursor: pointer; user-select: none; }
table.sortable th[data-sort]::after { content: " \\2195"; color: #9aa1a7; }
table.sortable th[aria-sort=ascending]::after { content: " \\25B2"; color: #1d2125; }
table.sortable th[aria-sort=descending]::after { content: " \\25BC"; color: #1d2125; }
tr.positive td.label { color: #b3261e; font-weight: 600; }
.high { color: #b3261e; font-weight: 600; }
.muted { color: #8a9197; }
.small { font-size: .85em; }
details.overlay summary { list-style: none; cursor: zoom-in; }
details.overlay summary::-webkit-details-marker { display: none; }
details.overlay img { height: 110px; display: block; }
/* an opened thumbnail shows full size over a dimmed page; a click anywhere closes it */
details.overlay[open] summary { cursor: zoom-out; }
details.overlay[open] summary::before { content: ""; position: fixed; inset: 0; background: rgba(20, 24, 28, .6);
                                        z-index: 9; }
details.overlay[open] img { position: fixed; z-index: 10; top: 50%; left: 50%; transform: translate(-50%, -50%);
                            height: auto; max-width: 92vw; max-height: 92vh; background: #fff;
                            box-shadow: 0 4px 24px rgba(0, 0, 0, .4); }
.plots { display: flex; flex-wrap: wrap; gap: 1rem; }
.plots figure { margin: 0; }
.plots img { width: 360px; max-width: 100%; border: 1px solid #dde1e4; }
a { color: #0b5cad; }
</style>
{% block head %}{% endblock %}
</head>
<body>
{% block body %}{% endblock %}
<script>
// Click a column header to sort its table; click again to reverse. Cells sort by data-value (if any) or text.
for (const th of document.querySelectorAll("table.sortable th[data-sort]")) {
  th.addEventListener("click", () => {
    const table = th.closest("table"), body = table.tBodies[0], col = th.cellIndex;
    const numeric = th.dataset.sort === "num";
    const dir = th.getAttribute("aria-sort") === "descending" ? 1 : -1;
    const key = row => {
      const cell = row.cells[col], raw = cell.dataset.value ?? cell.textContent.trim();
      const x = numeric ? parseFloat(raw) : raw.toLowerCase();
      return numeric && Number.isNaN(x) ? -Infinity : x;
    };
    const rows = Array.from(body.rows);
    rows.sort((a, b) => { const x = key(a), y = key(b); return (x < y ? -1 : x > y ? 1 : 0) * dir; });
    for (const row of rows) body.appendChild(row);
    for (const other of table.querySelectorAll("th")) other.removeAttribute("aria-sort");
    th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
  });
}
</script>
{% block scripts %}{% endblock %}
</body>
</html>
"""


def render(template: str, **context) -> str:
    """Render a report template that extends "page.html"."""
    import jinja2

    from pdac import __version__

    env = jinja2.Environment(loader=jinja2.DictLoader({"page.html": PAGE}), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["number"] = number
    return env.from_string(template).render(pdac_version=__version__, **context)


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def number(value, digits: int = 3) -> str:
    """A number for a table cell; '–' for None / nan."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, bool) or isinstance(value, int):
        return str(value)
    return f"{round(value, digits) + 0.0:.{digits}f}"


def duration(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
