"""The case viewer pages (issue #31): `cases/<case>.html` of `pdac detect --report` and `pdac evaluate --scans`.

Without a browser: the vendored NiiVue (checksum, licences, NOTICE), the embedded volumes (geometry, HU), the size
budget (a large scan is shown on a coarser grid, stated on the page; a page that cannot fit is refused) and the
escaping of hostile case names. In headless Chromium (WebGL2 on SwiftShader, tests/viewer_probe.py, driven with
real input events): the page loads with no error and no request, the views are drawn, the mouse wheel and the
keys change the slice, a click on a lesion moves the crosshair to its centroid, the overlay toggle changes the
pixels, and flipped / oblique scans show the anatomy as the PNG overlays do."""

from __future__ import annotations

import hashlib
import html
import json
import re
import shutil
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import SimpleITK as sitk
from browser import chromium, requires_chromium, table_rows
from conftest import REPO, WEIGHTS, pdac, write_phantom

from pdac.html import volumes as vol
from pdac.html.viewer import NIIVUE_SHA256, NIIVUE_VERSION, VENDOR, PageTooLarge, case_page
from pdac.infer.candidates import lesion_list
from pdac.infer.case_viewer import detect_case_page, page_href, page_name
from pdac.labels import Label

HOSTILE = '<img src=x onerror=alert(1)> & "q"'  # as a case id (and file name): never markup, JSON intact
SEED = 21  # one anatomy, in three orientations (the phantom's seed fixes the anatomy, not the grid)


def phantom_case(tmp: Path, orientation: str, case: str = "case", seed: int = SEED):
    """(scan, detection map, lesion-list record, stage-1 style pancreas mask) of a phantom: the true lesion as a
    0.8 candidate and a second, 0.3 candidate in the pancreas, far from it (two rows to jump between)."""
    scan, label = write_phantom(tmp / f"{orientation}_0000.mha", seed, orientation)
    lab = sitk.GetArrayFromImage(label)
    det = np.where(lab == Label.PDAC, 0.8, 0.0).astype(np.float32)
    lesion_centre = np.argwhere(lab == Label.PDAC).mean(axis=0)
    pancreas = np.argwhere(lab == Label.PANCREAS)
    far = pancreas[np.argmax(((pancreas - lesion_centre) ** 2).sum(axis=1))]
    far = pancreas[((pancreas - far) ** 2).sum(axis=1) <= 4]  # a small ball at the far end
    det[tuple(far.T)] = 0.3
    detection = sitk.GetImageFromArray(det)
    detection.CopyInformation(scan)
    lesions = [{"centroid_world_mm": le.centroid_world_mm, "likelihood": le.likelihood, "volume_mm3": le.volume_mm3}
               for le in lesion_list(det, detection)]
    record = {"likelihood": 0.8, "pancreas_found": True, "lesions": sorted(lesions, key=lambda e: -e["likelihood"])}
    mask = sitk.Cast(sitk.BinaryThreshold(label, 1, 255), sitk.sitkUInt8)  # coarser grid: resampled on the page
    mask = sitk.Resample(mask, [n // 2 for n in mask.GetSize()], sitk.Transform(), sitk.sitkNearestNeighbor,
                         mask.GetOrigin(), [2 * s for s in mask.GetSpacing()], mask.GetDirection())
    return scan, detection, record, mask


def write_page(tmp: Path, orientation: str, case: str = "case") -> tuple[Path, dict]:
    scan, detection, record, mask = phantom_case(tmp, orientation, case)
    page = detect_case_page(case, scan, detection, record, mask, warnings=["a <b>warning</b>"],
                            banners=["synthetic weights"])
    path = tmp / page_name(orientation)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page.html, encoding="utf-8")
    return path, {"scan": scan, "detection": detection, "record": record, "stats": page.stats}


# without a browser ---------------------------------------------------------------------------------------------

def test_niivue_is_vendored_with_its_licences():
    data = (VENDOR / "niivue.umd.js").read_bytes()
    assert hashlib.sha256(data).hexdigest() == NIIVUE_SHA256
    assert b"fetch(" in data or b"XMLHttpRequest" in data  # the real library (it can fetch: the page's CSP stops it)
    assert "BSD" in (VENDOR / "LICENSE").read_text() and (VENDOR / "THIRD-PARTY-LICENSES.txt").stat().st_size > 1000
    assert NIIVUE_VERSION in (VENDOR / "README.md").read_text() and NIIVUE_SHA256 in (VENDOR / "README.md").read_text()
    notice = (REPO / "NOTICE").read_text()
    assert f"NiiVue {NIIVUE_VERSION}" in notice and NIIVUE_SHA256 in notice
    for name in ("LICENSE", "THIRD-PARTY-LICENSES.txt", "niivue.umd.js"):
        assert f"pdac/html/vendor/niivue/{name}" in notice


def test_volumes_keep_geometry_and_hounsfield_units(tmp_path):
    scan, _ = write_phantom(tmp_path / "oblique.mha", SEED, "oblique")
    box = vol.Box((3, 5, 7), (40, 30, 20))
    grid = vol.ct_grid(scan, box, (1, 1, 1))
    path = tmp_path / "ct.nii.gz"
    path.write_bytes(vol.nifti_gz(vol.quantised_ct(sitk.GetArrayViewFromImage(grid)), grid, vol.CT_STEP_HU,
                                  vol.CT_MIN_HU))
    back = sitk.ReadImage(str(path), sitk.sitkFloat32)  # SimpleITK applies scl_slope / scl_inter
    np.testing.assert_allclose(back.GetOrigin(), scan.TransformIndexToPhysicalPoint(box.start), atol=1e-3)
    np.testing.assert_allclose(back.GetDirection(), scan.GetDirection(), atol=1e-5)
    np.testing.assert_allclose(back.GetSpacing(), scan.GetSpacing(), rtol=1e-5)
    hu = sitk.GetArrayFromImage(sitk.Cast(scan, sitk.sitkFloat32))[box.slices_zyx]
    shown = sitk.GetArrayFromImage(back)
    inside = (hu > vol.CT_MIN_HU) & (hu < vol.CT_MAX_HU)
    assert np.abs(shown - hu)[inside].max() <= vol.CT_STEP_HU / 2 + 1e-3


def test_coarser_grids_keep_small_lesions_and_the_important_label():
    labels = np.zeros((4, 4, 4), np.uint8)
    labels[:2, :2, :2] = Label.PANCREAS
    labels[0, 0, 0] = Label.PDAC
    labels[3, 3, 3] = Label.VEINS
    out = vol.block_label(labels, (2, 2, 2), (Label.PDAC, Label.PANCREAS, Label.VEINS))
    assert out[0, 0, 0] == Label.PDAC and out[1, 1, 1] == Label.VEINS and out[0, 1, 0] == 0
    maps = np.zeros((4, 4, 4), np.float32)
    maps[3, 0, 1] = 0.7
    assert vol.block_max(maps, (2, 2, 2))[1, 0, 0] == pytest.approx(0.7)
    assert vol.shrink_factors((0.7, 0.7, 3.0), (512, 512, 100), 512 * 512 * 100 // 4) == (2, 2, 1)


def test_a_large_scan_is_shown_coarser_within_the_budget(tmp_path):
    """The issue's example, a 512 x 512 x 400 scan of noisy tissue (it compresses badly): the page holds its
    10 MB budget on a coarser grid, says so, and keeps a one-voxel lesion."""
    rng = np.random.default_rng(0)
    ct = rng.integers(-20, 100, size=(400, 512, 512), dtype=np.int16)  # uniform noise: cheap, compresses worst
    scan = sitk.GetImageFromArray(ct)
    scan.SetSpacing((0.7, 0.7, 1.0))
    det = np.zeros(ct.shape, np.float32)
    det[200, 250, 260] = 0.9
    detection = sitk.GetImageFromArray(det)
    detection.CopyInformation(scan)
    record = {"likelihood": 0.9, "pancreas_found": False, "lesions": [
        {"centroid_world_mm": list(scan.TransformIndexToPhysicalPoint((260, 250, 200))), "likelihood": 0.9,
         "volume_mm3": 0.5}]}
    page = detect_case_page("big", scan, detection, record, None)
    assert page.stats.size_bytes <= 10_000_000 and not page.stats.over_budget
    assert page.stats.factors != (1, 1, 1)
    assert "Shown on a coarser grid than the scan" in page.html
    assert "x".join(map(str, page.stats.factors)) in page.html
    print(f"\n512x512x400: {page.stats.size_bytes / 1e6:.1f} MB, grid {page.stats.grid_size}, "
          f"factors {page.stats.factors}")
    grid_map = re.search(r'id="volume-1">([^<]+)<', page.html).group(1)
    (tmp_path / "map.nii.gz").write_bytes(__import__("base64").b64decode(grid_map))
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "map.nii.gz"))).max() == pytest.approx(0.9)


def test_a_page_that_cannot_fit_is_refused(tmp_path):
    scan, _ = write_phantom(tmp_path / "p.mha", SEED, "identity")
    with pytest.raises(PageTooLarge, match="over its budget of 1.0 MB"):
        case_page("x", scan, heading="x", region="whole", budget_bytes=1_000_000)  # NiiVue alone is 2.3 MB


def test_hostile_case_names_are_escaped(tmp_path):
    scan, detection, record, mask = phantom_case(tmp_path, "identity", HOSTILE)
    page = detect_case_page(HOSTILE, scan, detection, record, mask).html
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt; &amp;" in page
    data = json.loads(re.search(r'<script type="application/json" id="viewer-data">(.*?)</script>', page, re.S)[1])
    assert data["case"] == HOSTILE  # tojson escapes <, >, & and ' as \\u00xx: the JSON reads back unchanged
    href = page_href(HOSTILE)
    assert not set(href) & set('<>"& ') and unquote(href) == page_name(HOSTILE)


# in a browser --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("viewer-pages")
    return {o: write_page(tmp, o) for o in ("identity", "flipped", "oblique")}


@pytest.fixture(scope="module")
def session(tmp_path_factory, pages):
    if chromium() is None:
        pytest.skip("Chromium not found: the viewer pages were NOT checked in a browser")
    from viewer_probe import ViewerSession

    s = ViewerSession(pages["identity"][0], tmp_path_factory.mktemp("viewer-browser"))
    yield s
    s.close()


def open_page(session, pages, orientation: str):
    if session.url != pages[orientation][0].resolve().as_uri():
        session.goto(pages[orientation][0])
    return pages[orientation][1]


@requires_chromium
def test_the_page_loads_and_draws_without_errors_or_requests(session, pages):
    open_page(session, pages, "identity")
    assert session.problems() == [] and session.fetched() == []
    state = session.state()
    assert state["status"] == "" and state["volumes"] == 3  # CT, detection map, pancreas
    assert "HU" in state["location"]
    pixels = session.canvas()
    for kind, (rows, cols) in ((k, session.tile_slices(k)) for k in (0, 1, 2)):
        tile = pixels[rows, cols]
        assert tile.std() > 20, f"view {kind} is blank"
    from viewer_probe import hot_centroid

    assert hot_centroid(pixels[session.tile_slices(0)]) is not None, "no detection overlay in the axial view"


@requires_chromium
@pytest.mark.parametrize("kind", [0, 1, 2])
def test_the_mouse_wheel_and_the_keys_change_the_slice(session, pages, kind):
    from viewer_probe import changed_fraction

    open_page(session, pages, "identity")
    session.click_finding(0)
    axis = {0: 2, 1: 1, 2: 0}[kind]  # the voxel axis each view scrolls (identity grid)
    before, pixels = session.position()["vox"], session.canvas()
    session.wheel(kind, 100)
    after = session.position()["vox"]
    assert after[axis] != before[axis] and [a for i, a in enumerate(after) if i != axis] == \
        [b for i, b in enumerate(before) if i != axis]
    assert changed_fraction(pixels, session.canvas()) > 0.001
    session.point_at(kind)
    session.key("ArrowUp")
    session.key("ArrowUp")
    assert abs(session.position()["vox"][axis] - after[axis]) == 2


@requires_chromium
@pytest.mark.parametrize("orientation", ["identity", "oblique"])
def test_clicking_a_lesion_moves_the_views_to_its_centroid(session, pages, orientation):
    info = open_page(session, pages, orientation)
    findings = session.findings()
    assert len(findings) == 2
    spacing = max(info["scan"].GetSpacing())
    for i in (1, 0):
        session.click_finding(i)
        lps = np.array(info["record"]["lesions"][i]["centroid_world_mm"])
        np.testing.assert_allclose(findings[i]["lps"], lps, atol=0.01)
        shown = np.array(session.position()["mm"]) * [-1, -1, 1]  # NiiVue's RAS -> LPS
        assert np.linalg.norm(shown - lps) <= spacing, (i, shown, lps)
        assert session.state()["current"] == [i]


@requires_chromium
def test_the_overlay_toggle_and_opacity_change_the_pixels(session, pages):
    from viewer_probe import changed_fraction, hot_centroid

    open_page(session, pages, "identity")
    session.click_finding(0)
    axial = session.tile_slices(0)
    shown = session.canvas()
    session.show_overlay(0, False)
    hidden = session.canvas()
    assert session.state()["opacities"][1] == 0
    assert hot_centroid(hidden[axial]) is None and changed_fraction(shown, hidden) > 0.0005
    session.show_overlay(0, True)
    assert changed_fraction(shown, session.canvas()) == 0
    session.show_overlay(1, True)  # the pancreas outline
    assert changed_fraction(shown, session.canvas()) > 0.001
    session.show_overlay(1, False)
    session.choose_window(3)
    assert session.state()["inputs"][0] == str(int(vol.CT_MAX_HU - vol.CT_MIN_HU))
    assert changed_fraction(shown, session.canvas()) > 0.05
    session.choose_window(0)


def png_offsets(scan: sitk.Image, detection: sitk.Image) -> np.ndarray:
    """(row, column) of the lesion against the body in the PNG overlay's axial panel (pdac.infer.overlay: LPS
    arrays, row 0 anterior, column 0 the patient's right), as fractions of the body's height and width."""
    from pdac.infer.overlay import _radiological

    ct = sitk.GetArrayFromImage(_radiological(scan))
    det = sitk.GetArrayFromImage(_radiological(detection))
    z = int(np.argwhere(det >= 0.8)[:, 0].mean().round())
    body = np.argwhere(ct[z] > -160 + 40 / 255 * 400)  # brighter than the viewer's grey threshold
    lesion = np.argwhere(det[z] >= 0.8).mean(axis=0)
    return (lesion - body.mean(axis=0)) / (body.max(axis=0) - body.min(axis=0))


@requires_chromium
@pytest.mark.parametrize("orientation", ["identity", "flipped", "oblique"])
def test_orientation_matches_the_png_overlay(session, pages, orientation):
    """The same anatomy stored in three orientations: the lesion sits at the same place against the body in the
    viewer's axial view as in the PNG overlay (radiological convention: the patient's right on the left)."""
    from viewer_probe import grey_centroid, hot_centroid

    info = open_page(session, pages, orientation)
    session.click_finding(0)
    session.show_overlay(1, False)
    tile = session.canvas()[session.tile_slices(0)]
    lesion, body = hot_centroid(tile), grey_centroid(tile)
    assert lesion is not None and body is not None
    x = tile.astype(np.int16)
    grey = (np.abs(x - x[..., 2:3]).max(axis=2) < 12) & (x[..., 1] > 40)  # as grey_centroid counts the body
    rows, cols = np.nonzero(grey)
    extent = np.array([rows.max() - rows.min(), cols.max() - cols.min()])
    viewer = (lesion - body) / extent
    expected = png_offsets(info["scan"], info["detection"])
    assert np.all(np.sign(viewer) == np.sign(expected)) or np.abs(viewer - expected).max() < 0.05, (viewer, expected)
    np.testing.assert_allclose(viewer, expected, atol=0.12)


# the commands ----------------------------------------------------------------------------------------------------

@requires_chromium
def test_detect_report_and_evaluate_link_their_viewer_pages(tmp_path):
    """`pdac detect --report` writes a page per case by default and links it; `pdac evaluate --scans` writes
    pages with the reference label; both open cleanly in the browser and jump to their lesions."""
    from viewer_probe import ViewerSession

    scans, labels = tmp_path / "scans", tmp_path / "labels"
    names = {"plain": "identity", HOSTILE: "flipped"}
    for case, orientation in names.items():
        _, label = write_phantom(scans / f"{case}_0000.mha", SEED, orientation)
        labels.mkdir(exist_ok=True)
        sitk.WriteImage(label, str(labels / f"{case}.mha"))
    weights = tmp_path / "weights"
    shutil.copytree(WEIGHTS, weights)
    out = tmp_path / "detect"
    result = pdac("detect", str(scans), "-o", str(out), "--report", "--weights", str(weights))
    assert result.returncode == 0, result.stderr[-3000:]
    report = (out / "report.html").read_text()
    for case in names:
        assert f'href="{page_href(case)}"' in report.replace("&#34;", '"').replace("&amp;", "&") or \
            f'href="{html.escape(page_href(case))}"' in report
        assert (out / page_name(case)).is_file()
        assert (out / page_name(case)).stat().st_size < 10_000_000
    assert table_rows(report)["cases"]
    evaluation = tmp_path / "evaluation"
    result = pdac("evaluate", "--detections", str(out), "--labels", str(labels), "-o", str(evaluation),
                  "--scans", str(scans), "--bootstrap", "0")
    assert result.returncode == 0, result.stderr[-3000:]
    assert all((evaluation / page_name(case)).is_file() for case in names)
    assert page_href("plain") in (evaluation / "report.html").read_text()
    session = ViewerSession(out / page_name("plain"), tmp_path / "browser")
    try:
        for page in (out / page_name("plain"), evaluation / page_name(HOSTILE), out / page_name(HOSTILE)):
            session.goto(page)
            assert session.problems() == [] and session.fetched() == [], page
            assert session.canvas().std() > 20
            assert session.js("document.querySelector('h1').textContent").startswith(page.stem)
            for i, finding in enumerate(session.findings()):
                session.click_finding(i)
                shown = np.array(session.position()["mm"]) * [-1, -1, 1]
                assert np.linalg.norm(shown - finding["lps"]) <= 3.5, (page, finding, shown)
        kinds = {o["kind"] for o in session.overlays()}
        assert kinds == {"map", "label"}
    finally:
        session.close()
