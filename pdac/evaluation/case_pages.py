"""Viewer pages of `pdac evaluate --scans DIR` (`cases/<case>.html` in the report folder, linked from its
report.html): the scan with the reference label (outlined) and every set's detection map as overlays, and a lesion
list of the reference lesions and each set's candidates, so that a false positive and a missed lesion can be seen.

The region shown is the box around everything labelled or detected, plus the pipeline's crop margins."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from pdac.config import CropConfig
from pdac.evaluation.discovery import DetectionSet
from pdac.html.viewer import CasePage, Finding, Overlay, case_page
from pdac.html.volumes import Box
from pdac.infer.candidates import lesion_list
from pdac.infer.case_viewer import page_href, page_name
from pdac.infer.dicom import find_cases
from pdac.infer.geometry import crop_region_around_mask
from pdac.infer.io import read_image, write_text_atomic
from pdac.labels import DISPLAY_COLOURS, Label

log = logging.getLogger(__name__)

# A coarser grid keeps, per block, the first of these labels that the block holds: PDAC is never lost.
LABEL_PRIORITY = (Label.PDAC, Label.PANCREATIC_DUCT, Label.COMMON_BILE_DUCT, Label.PANCREAS, Label.VEINS,
                  Label.ARTERIES)


def _findings(array: np.ndarray, grid: sitk.Image, group: str, prefix: str = "", likelihood: bool = True):
    return [Finding(group, f"{prefix}{i}", tuple(le.centroid_world_mm), le.likelihood if likelihood else None,
                    le.volume_mm3 / 1000) for i, le in enumerate(lesion_list(array, grid), start=1)]


def _outcome_line(name: str, case: dict) -> str:
    lesions = [e for e in case["lesions"] if e[0]]
    hits = sum(1 for e in lesions if e[1] > 0)
    false_positives = sum(1 for e in case["lesions"] if not e[0] and e[1] > 0)
    dice = case.get("dice")
    return (f"{name}: likelihood {case['prediction']:.3f}, {len(lesions) - hits} of {len(lesions)} lesions missed, "
            f"{false_positives} false positive{'' if false_positives == 1 else 's'}"
            + (f", Dice {dice:.3f}" if isinstance(dice, int | float) else "") + ".")


def evaluation_case_page(case: str, scan: sitk.Image, label: sitk.Image, maps: Mapping[str, sitk.Image],
                         outcomes: Mapping[str, dict], report_href: str = "../report.html") -> CasePage:
    """The page of one case: `maps` {set name: detection map}, `outcomes` {set name: the case's entry in
    metrics.json}."""
    label_array = sitk.GetArrayFromImage(label)
    target = label_array > 0
    for m in maps.values():
        target |= sitk.GetArrayViewFromImage(m) > 0
    region = crop_region_around_mask(target, label, scan, CropConfig().margins_mm)
    box = Box(region.start, region.size) if region else None
    truth = "PDAC" if (label_array == Label.PDAC).any() else "no PDAC"
    overlays = [Overlay(f"map-{i}", f"detection map: {name}", image, "map", visible=i == 0)
                for i, (name, image) in enumerate(maps.items())]
    overlays.append(Overlay("reference", "reference label", label, "label", opacity=0.1, priority=LABEL_PRIORITY,
                            colours={int(v): (v.display_name, c) for v, c in DISPLAY_COLOURS.items()}))
    findings = _findings((label_array == Label.PDAC).astype(np.float32), label, "reference lesion", "R",
                         likelihood=False)
    for name, image in maps.items():
        findings += _findings(sitk.GetArrayFromImage(image), image, f"candidate: {name}")
    facts = [f"Reference: {truth}."] + [_outcome_line(name, outcomes[name]) for name in maps if name in outcomes]
    return case_page(case, scan, heading=f"{case}: {truth} in the reference", box=box, overlays=overlays,
                     region=("the box around everything labelled or detected, plus the pipeline's crop margins"
                             if region else "the whole scan (nothing labelled or detected)"),
                     findings=findings, facts=facts, back=(report_href, "back to report.html"))


def write_case_pages(sets: Sequence[DetectionSet], labels: Mapping[str, Path], scan_dir: Path, out_dir: Path,
                     data: dict) -> dict[str, str]:
    """Write a page for every labelled case with a scan in `scan_dir` (`<case>_0000.mha`, `<case>.nii.gz`, DICOM
    series...); returns {case: link from report.html}. A case that fails is logged and left without a page."""
    scans = {s.case_id: s for s in find_cases([Path(scan_dir)])}
    missing = sorted(set(labels) - set(scans))
    if missing:
        log.warning("%d labelled case(s) without a scan in %s get no viewer page: %s", len(missing), scan_dir,
                    ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else ""))
    outcomes = {s["name"]: s["cases"] for s in data["sets"]}
    links = {}
    for case in sorted(set(labels) & set(scans)):
        try:
            scan = scans[case].read()
            label = read_image(labels[case], dtype=sitk.sitkUInt8)
            maps = {s.name: read_image(s.maps[case]) for s in sets}
            page = evaluation_case_page(case, scan, label, maps,
                                        {name: cases[case] for name, cases in outcomes.items() if case in cases})
            path = Path(out_dir) / page_name(case)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(page.html, path)
        except Exception as e:  # noqa: BLE001 - the metrics stand without the page
            log.warning("%s: no viewer page (%s: %s)", case, type(e).__name__, e)
            continue
        links[case] = page_href(case)
        log.info("%s: viewer page %s (%.1f MB)", case, path, page.stats.size_bytes / 1e6)
    return links
