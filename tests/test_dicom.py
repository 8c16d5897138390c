"""DICOM input for `pdac detect`: a real 20-slice CT series (tests/data/real-ct) and broken series made from
modified copies of its files (SimpleITK's DICOM writer): SR, SEG, a localizer (its own series or inside the
axial one), a missing slice, an uneven slice, a tilted stack. process.py stays .mha-only."""

from __future__ import annotations

import json
import locale
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import REPO, assert_valid_detection_map, pdac, process

from pdac.infer.dicom import DicomSeries, find_cases

SERIES = REPO / "tests" / "data" / "real-ct" / "example_ct_dicom"
ORIGINALS = sorted(SERIES.iterdir())
ROOT_UID = "1.2.826.0.1.3680043.8.498"  # example UID root for test objects
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
# Not copied from the original: the writer derives rescale tags from the pixels, UIDs are set per test series.
NOT_COPIED = ("0002|", "7fe0|", "0028|1052", "0028|1053", "0008|0016", "0008|0018", "0020|000d", "0020|000e")


def write_slice(src: Path, dst: Path, series_uid: str, index: int, tags: dict[str, str] | None = None) -> None:
    """A copy of one real DICOM slice under another series UID, with some tags changed ({"gggg|eeee": value})."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(src))
    image = reader.Execute()  # pixels in HU (rescale applied)
    out = sitk.Image(image)
    for key in reader.GetMetaDataKeys():
        value = reader.GetMetaData(key)
        if int(key[:4], 16) % 2 == 0 and value.strip() and not key.startswith(NOT_COPIED):
            out.SetMetaData(key, value)
    base = {"0020|000d": f"{ROOT_UID}.1", "0020|000e": series_uid, "0008|0016": CT_IMAGE,
            "0008|0018": f"{series_uid}.{index}"}
    for key, value in {**base, **(tags or {})}.items():
        out.SetMetaData(key, value)
    writer = sitk.ImageFileWriter()
    writer.SetImageIO("GDCMImageIO")
    writer.KeepOriginalImageUIDOn()
    writer.SetFileName(str(dst))
    dst.parent.mkdir(parents=True, exist_ok=True)
    saved = locale.setlocale(locale.LC_ALL)
    try:
        writer.Execute(out)
    finally:  # GDCM's writer switches the process to the C locale (subprocess output would decode as ASCII)
        locale.setlocale(locale.LC_ALL, saved)


def position(path: Path) -> tuple[float, float, float]:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return reader.GetOrigin()


def write_series(folder: Path, number: int, description: str, skip: tuple[int, ...] = (),
                 changes: dict[int, dict[str, str]] | None = None) -> str:
    """The real series rewritten under its own UID and description; `changes[i]` modifies slice i's tags."""
    uid = f"{ROOT_UID}.{number}"
    for i, src in enumerate(ORIGINALS):
        if i not in skip:
            write_slice(src, folder / f"IM{i:04d}", uid, i, {"0008|103e": description, **(changes or {}).get(i, {})})
    return uid


def ipp(xyz) -> str:
    return "\\".join(f"{v:.4f}" for v in xyz)


@pytest.fixture(scope="module")
def dicom_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dicom")
    # the real series, files renamed in an order unrelated to the geometry
    good = root / "patient" / "good"
    good.mkdir(parents=True)
    for i, src in enumerate(ORIGINALS):
        shutil.copy(src, good / f"img_{(i * 7) % len(ORIGINALS):03d}")
    (good / "DICOMDIR-notes.txt").write_text("not DICOM")
    # SR: a DICOM object without pixel data (the pixel data element cut off a rewritten slice)
    sr = root / "patient" / "sr" / "report.dcm"
    write_slice(ORIGINALS[0], sr, f"{ROOT_UID}.2", 0, {"0008|0060": "SR", "0008|0016": "1.2.840.10008.5.1.4.1.1.88.22",
                                                      "0008|103e": "Dose report"})
    data = sr.read_bytes()
    sr.write_bytes(data[: data.rfind(b"\xe0\x7f\x10\x00")])
    # SEG: a segmentation object (pixel data, but not a scan)
    for i in range(2):
        write_slice(ORIGINALS[i], root / "patient" / "seg" / f"seg{i}.dcm", f"{ROOT_UID}.3", i,
                    {"0008|0060": "SEG", "0008|0016": "1.2.840.10008.5.1.4.1.1.66.4", "0008|103e": "Pancreas seg"})
    # a coronal localizer as its own series
    write_slice(ORIGINALS[0], root / "patient" / "localizer" / "loc.dcm", f"{ROOT_UID}.4", 0,
                {"0008|0008": "ORIGINAL\\PRIMARY\\LOCALIZER", "0020|0037": "1\\0\\0\\0\\0\\-1",
                  "0008|103e": "Topogram"})
    # a slice missing in the middle
    write_series(root / "patient" / "missing", 5, "Missing slice", skip=(10,))
    # one slice 0.8 mm off its place
    shifted = np.add(position(ORIGINALS[10]), (0, 0, 0.8))
    write_series(root / "patient" / "uneven", 6, "Uneven", changes={10: {"0020|0032": ipp(shifted)}})
    # a tilted gantry: every slice shifted a little more in y
    tilt = {i: {"0020|0032": ipp(np.add(position(src), (0, 0.5 * i, 0)))} for i, src in enumerate(ORIGINALS)}
    write_series(root / "patient" / "tilted", 7, "Tilted", changes=tilt)
    # one slice with another orientation that does not call itself a localizer
    write_series(root / "patient" / "oriented", 8, "Oriented", changes={5: {"0020|0037": "1\\0\\0\\0\\0\\-1"}})
    return root


@pytest.fixture(scope="module")
def batch(dicom_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("dicom-out")
    r = pdac("detect", str(dicom_root), "-o", str(out))
    return r, out


def test_a_dicom_folder_gives_valid_outputs_on_the_series_grid(batch, dicom_root):
    r, out = batch
    case = "CT_Body_3.0_good"  # the anonymised series has no UID: description + folder name
    likelihoods = json.loads((out / "pdac-likelihood.json").read_text())
    assert list(likelihoods) == [case], r.stderr[-3000:]
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(SERIES))
    series = sitk.ReadImage(files)
    assert series.GetSize() == (512, 512, 20)
    det = sitk.ReadImage(str(out / f"{case}_detection_map.mha"))
    arr = assert_valid_detection_map(det, series)
    assert likelihoods[case] == pytest.approx(float(arr.max()), abs=1e-6)
    lesions = json.loads((out / f"{case}_lesions.json").read_text())
    assert {"pancreas", "provenance"} <= set(lesions)


def test_bad_series_are_skipped_or_refused_in_one_line_each(batch):
    r, out = batch
    assert r.returncode == 1, r.stderr[-3000:]  # the refused series count as failed cases
    assert "Traceback" not in r.stderr
    lines = r.stderr.splitlines()

    def one_line(*fragments):
        hits = [ln for ln in lines if all(f in ln for f in fragments)]
        assert len(hits) == 1, (fragments, hits)

    one_line("Pancreas_seg", "skipped: not an image series (modality SEG)")
    one_line("Topogram", "skipped: localizer images only")
    one_line(f"{Path('patient') / 'sr'}", "ignored", "without pixel data")
    one_line("ERROR", "Missing_slice", "uneven slice spacing", "missing")
    one_line("ERROR", "Uneven", "uneven slice spacing")
    one_line("ERROR", "Tilted", "gantry tilt")
    one_line("ERROR", "Oriented", "different orientations")
    assert "done: 1 ok, 4 failed" in r.stderr
    written = {p.name for p in out.iterdir()}
    assert not any(name.startswith(("Missing", "Uneven", "Tilted", "Oriented", "Pancreas", "Topogram", "Dose"))
                   for name in written), written


def test_series_reading_applies_rescale_and_orders_slices_by_geometry(dicom_root):
    (series,) = find_cases([dicom_root / "patient" / "good"])
    assert isinstance(series, DicomSeries)
    image = series.read()
    assert image.GetPixelID() == sitk.sitkFloat32
    reference = sitk.ReadImage(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(SERIES)))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(reference))
    np.testing.assert_allclose(image.GetSpacing(), (0.9765625, 0.9765625, 2.0))
    # stored values start at 0; with the rescale intercept (-1024) air is -1024 HU
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(ORIGINALS[0]))
    reader.ReadImageInformation()
    assert reader.GetMetaData("0028|1052").strip() == "-1024"
    assert float(sitk.GetArrayViewFromImage(image).min()) == -1024.0
    # slice order from the geometry: z grows with the index, whatever the file names say
    positions = [image.TransformIndexToPhysicalPoint((0, 0, k))[2] for k in range(image.GetSize()[2])]
    assert np.all(np.diff(positions) > 0)
    assert positions[0] == pytest.approx(min(position(f)[2] for f in ORIGINALS))


def test_a_localizer_inside_the_axial_series_is_left_out(tmp_path, caplog):
    uid = write_series(tmp_path / "mixed", 9, "With topogram")
    write_slice(ORIGINALS[0], tmp_path / "mixed" / "loc.dcm", uid, 99,
                {"0008|0008": "ORIGINAL\\PRIMARY\\LOCALIZER", "0020|0037": "1\\0\\0\\0\\0\\-1",
                 "0008|103e": "With topogram"})
    (series,) = find_cases([tmp_path])
    assert series.case_id == "With_topogram_04384989"  # description + the UID's last 8 digits
    assert len(series.files) == 20 and series.problem is None
    assert "left out 1 localizer image(s)" in caplog.text
    image = series.read()
    reference = sitk.ReadImage(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(SERIES)))
    assert image.GetSize() == reference.GetSize()
    np.testing.assert_allclose(image.GetOrigin(), reference.GetOrigin(), atol=1e-3)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(reference))


def test_process_stays_mha_only(tmp_path):
    folder = tmp_path / "in" / "images" / "venous-ct"
    shutil.copytree(SERIES, folder)
    r = process(tmp_path / "in", tmp_path / "out")
    assert r.returncode == 3
    assert "expected exactly one .mha scan" in r.stderr and "Traceback" not in r.stderr
