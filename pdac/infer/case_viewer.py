"""The viewer page of one `pdac detect` case (`cases/<case>.html`, linked from report.html): the scan's stage-2
crop with the detection map, the stage-1 pancreas as an outline to switch on, and the lesion list, rendered by
`pdac.html.viewer`."""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence
from pathlib import Path

import SimpleITK as sitk

from pdac.html.viewer import CasePage, Finding, Overlay, case_page
from pdac.html.volumes import Box
from pdac.labels import DISPLAY_COLOURS, Label

CASES_DIR = "cases"


def page_name(case: str) -> str:
    """The page's path relative to the output folder."""
    return f"{CASES_DIR}/{case}.html"


def page_href(case: str) -> str:
    """The page's link from a page in the output folder (the case id may hold any character)."""
    return f"{CASES_DIR}/{urllib.parse.quote(case + '.html')}"


def candidate_findings(lesions: Sequence[dict], group: str = "candidate") -> list[Finding]:
    """Lesion-list entries (`<case>_lesions.json`) as rows of the viewer's lesion list (those with a centroid)."""
    def number(value, scale=1.0):
        return float(value) * scale if isinstance(value, int | float) else None

    return [Finding(group, str(i), tuple(float(v) for v in le["centroid_world_mm"]), number(le.get("likelihood")),
                    number(le.get("volume_mm3"), 1e-3))
            for i, le in enumerate(lesions, start=1) if len(le.get("centroid_world_mm") or ()) == 3]


def _plausibility_line(record: dict) -> str:
    p = record.get("pancreas")
    found = "yes" if record.get("pancreas_found") else "no"
    if not isinstance(p, dict) or not p:
        return f"Pancreas found by stage 1: {found}."
    details = []
    if isinstance(p.get("volume_ml"), int | float):
        details.append(f"{p['volume_ml']:.3g} mL")
    if isinstance(p.get("median_hu"), int | float):
        details.append(f"median {p['median_hu']:.0f} HU")
    if p.get("reasons"):
        details.append("; ".join(map(str, p["reasons"])) if isinstance(p["reasons"], list) else str(p["reasons"]))
    plausible = {True: "yes", False: "no"}.get(p.get("plausible"), "unknown")
    return (f"Pancreas found by stage 1: {found}; plausible: {plausible}"
            + (f" ({', '.join(details)})" if details else "") + ".")


def detect_case_page(case: str, scan: sitk.Image, detection_map: sitk.Image, record: dict,
                     pancreas_mask: sitk.Image | None, warnings: Sequence[str] = (), banners: Sequence[str] = (),
                     report_href: str = "../report.html") -> CasePage:
    """The page; `record` is the case's lesion list (`<case>_lesions.json`), `pancreas_mask` stage 1's mask on its
    own grid (None: not shown)."""
    crop = record.get("crop_index_xyz") or {}
    box = Box(tuple(crop["start"]), tuple(crop["size"])) if crop else None
    region = ("the stage-2 crop: the stage-1 pancreas' box plus margins, where every candidate lies"
              if record.get("pancreas_found") else
              "the stage-2 crop: no pancreas was found, so the fixed box around the scan's centre that stage 2 read")
    overlays = [Overlay("detection", "detection map (lesion likelihood, red to yellow)", detection_map, "map")]
    if pancreas_mask is not None:
        overlays.append(Overlay("pancreas", "stage-1 pancreas (its 4.5 x 4.5 x 9 mm grid)", pancreas_mask, "label",
                                visible=False, opacity=0.1,
                                colours={1: ("stage-1 pancreas", DISPLAY_COLOURS[Label.PANCREAS])}))
    lesions = record.get("lesions", [])
    facts = [f"PDAC likelihood {float(record['likelihood']):.3f} · {len(lesions)} lesion candidate"
             f"{'' if len(lesions) == 1 else 's'}.", _plausibility_line(record)]
    return case_page(case, scan, heading=f"{case}: PDAC likelihood {float(record['likelihood']):.3f}",
                     region=region, box=box, overlays=overlays, findings=candidate_findings(lesions), facts=facts,
                     banners=banners, warnings=warnings, back=(report_href, f"back to {Path(report_href).name}"))
