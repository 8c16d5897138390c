"""report.html of `pdac evaluate`: the metrics table with CIs, the paired comparisons, the ROC / PR / FROC plots
and each set's cases, worst first. Pure rendering: the tables come ready-made from `pdac.evaluation.report`."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence

from pdac.html.page import png_data_uri, render

PLOT_TITLES = {"roc": "Patient ROC", "pr": "Lesion precision-recall", "froc": "Lesion FROC"}

TEMPLATE = """{% extends "page.html" %}
{% block title %}{{ title }}{% endblock %}
{% block body %}
<h1>{{ title }}</h1>
<p class="summary">{{ method }}</p>
<p class="note">Labels: {{ labels }} &middot; pdac {{ pdac_version }} &middot; {{ date }}</p>

<h2>Metrics</h2>
<table id="metrics">
<thead><tr>{% for h in metrics_header %}<th{% if not loop.first %} class="num"{% endif %}>{{ h }}</th>{% endfor %}
</tr></thead>
<tbody>
{% for row in metrics_rows %}
<tr>{% for cell in row %}<td{% if not loop.first %} class="num"{% endif %}>{{ cell }}</td>{% endfor %}</tr>
{% endfor %}
</tbody>
</table>

{% if comparison_rows %}
<h2>Paired comparisons against {{ reference }}</h2>
<p class="note">Differences to {{ reference }} on the same bootstrap resamples of cases; two-sided p-values.</p>
<table id="comparisons">
<thead><tr>{% for h in comparison_header %}<th{% if not loop.first %} class="num"{% endif %}>{{ h }}</th>
{% endfor %}</tr></thead>
<tbody>
{% for row in comparison_rows %}
<tr>{% for cell in row %}<td{% if not loop.first %} class="num"{% endif %}>{{ cell }}</td>{% endfor %}</tr>
{% endfor %}
</tbody>
</table>
{% endif %}

<h2>Curves</h2>
<div class="plots">
{% for name, uri in plots %}
<figure><img src="{{ uri }}" alt="{{ plot_titles[name] }}"></figure>
{% endfor %}
</div>

<h2>Cases, worst first</h2>
<p class="note">Worst: the largest patient error (1 - likelihood for a case with PDAC, the likelihood for one
  without), then the most missed lesions and false positives. Hits: lesions matched by a candidate with
  IoU &ge; 0.1. Click a column header to sort{% if case_links %}; click a case to open its viewer (the scan with
  the reference label and the detection maps, three planes, the lesions){% endif %}.</p>
{% for name, outcomes in cases %}
<details{% if loop.first %} open{% endif %}>
<summary><h3 style="display: inline">{{ name }}</h3> <span class="muted">({{ outcomes|length }} cases)</span>
</summary>
<table class="sortable cases" id="cases-{{ loop.index0 }}">
<thead><tr>
  <th data-sort="text">case</th>
  <th data-sort="text">label</th>
  <th data-sort="num" class="num">likelihood</th>
  <th data-sort="num" class="num">lesions</th>
  <th data-sort="num" class="num">hits</th>
  <th data-sort="num" class="num">missed</th>
  <th data-sort="num" class="num">false positives</th>
  <th data-sort="num" class="num">Dice</th>
  <th data-sort="num" class="num" aria-sort="descending">error</th>
</tr></thead>
<tbody>
{% for o in outcomes %}
<tr{% if o.target %} class="positive"{% endif %}>
  <td>{% if o.case in case_links %}<a href="{{ case_links[o.case] }}" title="open the case viewer">{{ o.case }}</a>
    {%- else %}{{ o.case }}{% endif %}</td>
  <td class="label">{{ "PDAC" if o.target else "no PDAC" }}</td>
  <td class="num" data-value="{{ o.prediction }}">{{ o.prediction|number }}</td>
  <td class="num">{{ o.lesions }}</td>
  <td class="num">{{ o.hits }}</td>
  <td class="num{% if o.missed %} high{% endif %}">{{ o.missed }}</td>
  <td class="num{% if o.false_positives %} high{% endif %}">{{ o.false_positives }}</td>
  <td class="num" data-value="{{ o.dice if o.dice is not none else '' }}">{{ o.dice|number }}</td>
  <td class="num" data-value="{{ o.error }}">{{ o.error|number }}</td>
</tr>
{% endfor %}
</tbody>
</table>
</details>
{% endfor %}
{% endblock %}
"""


def evaluation_html(title: str, method: str, labels: str, metrics: tuple[list[str], list[list[str]]],
                    comparison: tuple[str, list[str], list[list[str]]] | None,
                    cases: Mapping[str, Sequence], plots: Mapping[str, bytes],
                    case_links: Mapping[str, str] | None = None) -> str:
    """The page. `metrics`: (header, rows); `comparison`: (reference set, header, rows) or None; `cases`:
    {set name: case outcomes, worst first}; `plots`: {"roc" | "pr" | "froc": PNG bytes}; `case_links`: {case:
    link to its viewer page}."""
    reference, comparison_header, comparison_rows = comparison or ("", [], [])
    return render(
        TEMPLATE, title=title, method=method, labels=labels,
        date=datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z").strip(),
        metrics_header=metrics[0], metrics_rows=metrics[1], reference=reference,
        comparison_header=comparison_header, comparison_rows=comparison_rows,
        plots=[(name, png_data_uri(plots[name])) for name in PLOT_TITLES if name in plots],
        plot_titles=PLOT_TITLES, cases=list(cases.items()), case_links=dict(case_links or {}))
