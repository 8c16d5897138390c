"""`pdac detect --dicom-out / --send` and `pdac send`, through the CLI, checked by tools that are not our writer:
dicom3tools' dciodvfy (no errors; the warnings it gives are listed and explained below), dcmqi's
segimage2itkimage and tid1500reader (the SEG back to label volumes, voxel for voxel on the source grid, and the
SR back to measurements), and a real PACS (Debian's Orthanc on 127.0.0.1, tests/pacs.py) for the round trip.

One `pdac detect` run covers: the real CT series (tests/data/real-ct, UIDs set: its anonymiser blanked them)
and two phantoms written as DICOM series (flipped, and oblique with a left-handed direction matrix, so the
slices are re-ordered when read). With Orthanc installed the inputs are first stored in it and taken back from
it, and the outputs are sent to it (`--send`); without, the run writes them only (`--dicom-out`) and the PACS
tests skip. The anonymised original (blank UIDs) rides along: SEG cannot reference it, so it is refused in one
line."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from conftest import REPO, pdac, write_phantom
from dicom_series import REAL_SERIES, ROOT, copy_real_series, write_ct_series
from pacs import CALLING_AE, DROPPED_PATIENT, Orthanc, free_port
from pydicom.uid import generate_uid

from pdac.infer.candidates import lesion_labels

DCIODVFY = shutil.which("dciodvfy")
ORTHANC = shutil.which("Orthanc")
DCMQI_BIN = Path(sys.executable).parent
SEGIMAGE2ITK = shutil.which("segimage2itkimage", path=f"{DCMQI_BIN}:{Path('/usr/bin')}")
TID1500READER = shutil.which("tid1500reader", path=f"{DCMQI_BIN}:{Path('/usr/bin')}")
# dciodvfy warnings on our objects, each explained; any other warning fails the test (so it gets explained).
EXPLAINED_WARNINGS = {
    # The real series has no Study ID (its anonymiser removed it); SEG and SR copy the study's identifiers, and
    # invent none, so the DICOMDIR key stays missing as in the source.
    "Missing attribute or value that would be needed to build DICOMDIR - Study ID",
    # The real series' Procedure Code Sequence uses the vendor's coding scheme SECTRA, copied with the study;
    # dciodvfy knows only the standard's scheme designators.
    "Unrecognized defined term <SECTRA> for value 1 of attribute <Coding Scheme Designator>",
}


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    if not ORTHANC:
        yield None  # the PACS tests skip; the rest run on local files
        return
    server = Orthanc(tmp_path_factory.mktemp("orthanc"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def need(server):
    if server is None:
        pytest.skip("Orthanc not installed (apt-get install orthanc; .ci/run installs it): PACS round trip untested")
    return server


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, dict]:
    """The DICOM inputs as written: {series UID: {folder, patient, study}}."""
    root = tmp_path_factory.mktemp("dicom-sources")
    made = {}
    study = generate_uid(prefix=ROOT)
    uid = copy_real_series(root / "real", patient_id="REAL-1", patient_name="Real^Abdomen", study_uid=study)
    made[uid] = {"folder": root / "real", "patient": "REAL-1", "study": study}
    study = generate_uid(prefix=ROOT)  # one study, two phantom series
    for seed, orientation in ((12, "flipped"), (13, "oblique")):
        image, _ = write_phantom(root / f"{orientation}.mha", seed, orientation)
        uid = write_ct_series(image, root / orientation, patient_id="PHANTOM-1", patient_name="Phantom^Two",
                              study_uid=study, description=f"phantom {orientation}", series_number=3 + seed)
        made[uid] = {"folder": root / orientation, "patient": "PHANTOM-1", "study": study}
    return made


@pytest.fixture(scope="module")
def run(sources, orthanc, tmp_path_factory):
    """(CompletedProcess, output folder, inputs folder) of the one detect run."""
    inputs = tmp_path_factory.mktemp("dicom-inputs")
    out = tmp_path_factory.mktemp("dicom-outputs")
    for uid, src in sources.items():
        if orthanc:
            orthanc.upload(sorted(src["folder"].iterdir()))
            orthanc.download_series(uid, inputs / src["folder"].name)  # what the archive gives back
        else:
            shutil.copytree(src["folder"], inputs / src["folder"].name)
    shutil.copytree(REAL_SERIES, inputs / "anonymised")
    send = ["--send", orthanc.destination, "--calling-ae", CALLING_AE] if orthanc else ["--dicom-out"]
    r = pdac("detect", str(inputs), "-o", str(out), *send, timeout=2400)  # minutes alone; loaded CI boxes
    return r, out, inputs


@pytest.fixture(scope="module")
def cases(run, sources) -> list[dict]:
    """Per processed case: its lesion list, detection map, SEG and SR paths, and the inputs' headers by UID."""
    r, out, inputs = run
    headers = {}
    for f in inputs.rglob("*"):
        if f.is_file() and not f.is_relative_to(inputs / "anonymised"):
            h = pydicom.dcmread(f, stop_before_pixels=True)
            headers[str(h.SOPInstanceUID)] = h
    found = []
    for lesions_json in sorted(out.glob("*_lesions.json")):
        case = lesions_json.name.removesuffix("_lesions.json")
        found.append({"case": case, "record": json.loads(lesions_json.read_text()), "headers": headers,
                      "map": sitk.ReadImage(str(out / f"{case}_detection_map.mha")),
                      "seg": out / f"{case}_seg.dcm", "sr": out / f"{case}_sr.dcm"})
    assert len(found) == len(sources), r.stderr[-3000:]
    return found


def test_every_dicom_series_gets_a_seg_and_an_sr_and_the_uidless_one_is_refused_in_one_line(run, cases, orthanc):
    r, out, _ = run
    assert r.returncode == 1, r.stderr[-3000:]  # the anonymised series is a failed case, the others are done
    assert "Traceback" not in r.stderr
    assert "done: 3 ok, 1 failed" in r.stderr
    refusals = [ln for ln in r.stderr.splitlines() if "ERROR" in ln and "no DICOM outputs possible" in ln]
    assert len(refusals) == 1 and "StudyInstanceUID" in refusals[0] and "never invented" in refusals[0], refusals
    assert not list(out.glob("CT_Body_3.0_anonymised*")), "nothing written for the refused series"
    for c in cases:
        assert c["seg"].exists() and c["sr"].exists(), c["case"]
        assert c["record"]["lesions"], f"{c['case']}: every input has a candidate with the demo weights"
    if orthanc:
        assert r.stderr.count("2 of 2 object(s) arrived") == len(cases), r.stderr[-3000:]


@pytest.mark.skipif(not DCIODVFY, reason="dciodvfy not installed (apt-get install dicom3tools; .ci/run installs it)")
def test_dciodvfy_finds_no_errors_and_only_explained_warnings(cases):
    for c in cases:
        for path in (c["seg"], c["sr"]):
            r = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=120)
            lines = [ln.strip() for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
            assert any(ln in ("Segmentation", "Comprehensive3DSR") for ln in lines), lines  # the IOD it checked
            errors = [ln for ln in lines if ln.startswith("Error")]
            assert not errors, (path.name, errors)
            warnings = {ln.removeprefix("Warning - ") for ln in lines if ln.startswith("Warning")}
            assert warnings <= EXPLAINED_WARNINGS, (path.name, warnings - EXPLAINED_WARNINGS)


def dcmqi_segments(seg: Path, folder: Path) -> dict[str, sitk.Image]:
    """dcmqi's reading of a SEG: {segment label: its image}."""
    folder.mkdir(parents=True, exist_ok=True)
    r = subprocess.run([SEGIMAGE2ITK, "--inputDICOM", str(seg), "--outputDirectory", str(folder), "-t", "nrrd",
                        "-p", "seg"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    meta = json.loads((folder / "seg-meta.json").read_text())
    return {group[0]["SegmentLabel"]: sitk.ReadImage(str(folder / f"seg-{i}.nrrd"))
            for i, group in enumerate(meta["segmentAttributes"], start=1)}


def voxels_on(image: sitk.Image, grid: sitk.Image) -> set[tuple[int, int, int]]:
    """The non-zero voxels of `image` as (x, y, z) indices of `grid`; each must fall exactly on a voxel of it."""
    idx = np.argwhere(sitk.GetArrayViewFromImage(image) > 0)[:, ::-1]
    direction = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())
    world = np.asarray(image.GetOrigin()) + idx @ direction.T
    g_dir = np.asarray(grid.GetDirection()).reshape(3, 3) * np.asarray(grid.GetSpacing())
    continuous = (world - np.asarray(grid.GetOrigin())) @ np.linalg.inv(g_dir).T
    assert np.abs(continuous - np.round(continuous)).max(initial=0) < 1e-2, "segment voxels off the source grid"
    return {tuple(v) for v in np.round(continuous).astype(int)}


def check_seg_against_map(seg_path: Path, c: dict, tmp: Path) -> None:
    """The SEG as dcmqi reads it holds exactly the detection map's candidates (label, likelihood, voxels), plus a
    pancreas where stage 1 put it."""
    segments = dcmqi_segments(seg_path, tmp)
    det = sitk.GetArrayFromImage(c["map"])
    labels = lesion_labels(det)
    lesions = c["record"]["lesions"]
    assert len(segments) == len(lesions) + 1, list(segments)
    for i, lesion in enumerate(lesions, start=1):
        label = f"PDAC candidate {i} p={lesion['likelihood']:.3f}"
        expected = {tuple(v) for v in np.argwhere(labels == i)[:, ::-1]}
        assert voxels_on(segments[label], c["map"]) == expected, (c["case"], label)
        np.testing.assert_allclose(det[labels == i], lesion["likelihood"], atol=1e-6)
    assert set().union(*(voxels_on(segments[f"PDAC candidate {i} p={le['likelihood']:.3f}"], c["map"])
                         for i, le in enumerate(lesions, start=1))) == {tuple(v) for v in np.argwhere(det > 0)[:, ::-1]}
    pancreas = voxels_on(segments["pancreas (stage 1)"], c["map"])
    centre = np.mean([c["map"].TransformIndexToPhysicalPoint(tuple(int(i) for i in v)) for v in pancreas], axis=0)
    assert np.linalg.norm(centre - c["record"]["pancreas"]["centroid_world_mm"]) < 10, c["case"]


@pytest.mark.skipif(not SEGIMAGE2ITK, reason="dcmqi not installed (pip install -r requirements-dev.txt)")
def test_dcmqi_reads_each_seg_back_to_the_candidates_voxel_for_voxel(cases, tmp_path):
    for c in cases:
        check_seg_against_map(c["seg"], c, tmp_path / c["case"])


def check_sr_against_lesion_list(sr_path: Path, c: dict, tmp: Path) -> None:
    tmp.mkdir(parents=True, exist_ok=True)
    r = subprocess.run([TID1500READER, "--inputDICOM", str(sr_path), "--outputMetadata", str(tmp / "sr.json")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    groups = json.loads((tmp / "sr.json").read_text())["Measurements"]
    seg = pydicom.dcmread(c["seg"], stop_before_pixels=True)

    def value(group, meaning):
        return float(next(m["value"] for m in group["measurementItems"] if m["quantity"]["CodeMeaning"] == meaning))

    assert groups[0]["TrackingIdentifier"] == "patient-level PDAC likelihood"
    assert value(groups[0], "Probability of cancer") == pytest.approx(c["record"]["likelihood"], abs=1e-9)
    lesions = c["record"]["lesions"]
    for i, (lesion, group) in enumerate(zip(lesions, groups[1:], strict=False), start=1):
        assert group["ReferencedSegment"] == i and group["segmentationSOPInstanceUID"] == seg.SOPInstanceUID
        assert group["SourceSeriesForImageSegmentation"] == seg.ReferencedSeriesSequence[0].SeriesInstanceUID
        assert value(group, "Probability of cancer") == pytest.approx(lesion["likelihood"], abs=1e-6)
        assert value(group, "Volume") == pytest.approx(lesion["volume_mm3"], abs=0.05)
        assert group["measurementAlgorithmIdentification"]["AlgorithmName"] == "pdac-demo-synthetic"
    assert groups[-1]["ReferencedSegment"] == len(lesions) + 1 and groups[-1]["Finding"]["CodeMeaning"] == "Pancreas"
    # centroids (SCOORD3D "Center of Mass", not read by tid1500reader) and the text lines, read with pydicom
    sr = pydicom.dcmread(sr_path)
    report = sr.ContentSequence
    measurements = next(i for i in report if i.ConceptNameCodeSequence[0].CodeMeaning == "Imaging Measurements")
    points = [item.GraphicData for group in measurements.ContentSequence for item in group.ContentSequence
              if item.ValueType == "SCOORD3D" and item.ConceptNameCodeSequence[0].CodeValue == "128138"]
    np.testing.assert_allclose(points, [le["centroid_world_mm"] for le in lesions], atol=1e-3)
    texts = [i.TextValue for q in report if q.ConceptNameCodeSequence[0].CodeMeaning == "Qualitative Evaluations"
             for i in q.ContentSequence]
    assert texts[0].startswith("SYNTHETIC") and any(t.startswith("stage-1 pancreas: plausible") for t in texts), texts


@pytest.mark.skipif(not TID1500READER, reason="dcmqi not installed (pip install -r requirements-dev.txt)")
def test_dcmqi_reads_each_sr_back_to_the_lesion_list(cases, tmp_path):
    for c in cases:
        check_sr_against_lesion_list(c["sr"], c, tmp_path / c["case"])


def test_identifiers_are_copied_and_frames_sit_on_their_source_slices(cases, sources):
    for c in cases:
        seg, sr = pydicom.dcmread(c["seg"]), pydicom.dcmread(c["sr"])
        source_uid = seg.ReferencedSeriesSequence[0].SeriesInstanceUID
        src = sources[source_uid]
        first = next(h for h in c["headers"].values() if h.SeriesInstanceUID == source_uid)
        for ds in (seg, sr):
            assert (ds.PatientID, ds.StudyInstanceUID) == (src["patient"], src["study"])
            for keyword in ("PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyDate",
                            "StudyTime", "StudyID", "ReferringPhysicianName"):
                assert ds.get(keyword) == first.get(keyword), (c["case"], keyword)
            assert ds.SeriesInstanceUID != source_uid and ds.SeriesDescription.endswith("SYNTHETIC")
            assert "pdac-demo-synthetic 2026-11-30" in ds.SeriesDescription
        assert seg.FrameOfReferenceUID == first.FrameOfReferenceUID
        assert seg.SegmentSequence[0].SegmentAlgorithmName == "pdac-demo-synthetic"
        positions = 0
        for frame in seg.PerFrameFunctionalGroupsSequence:
            ref = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
            np.testing.assert_allclose([float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient],
                                       [float(v) for v in c["headers"][ref].ImagePositionPatient], atol=1e-3)
            positions += 1
        assert positions == seg.NumberOfFrames > 0


# ---- the PACS round trip (Orthanc) -------------------------------------------------------------------------------

def test_seg_and_sr_arrive_in_the_source_study(cases, sources, orthanc):
    server = need(orthanc)
    for c in cases:
        seg, sr = (pydicom.dcmread(p, stop_before_pixels=True) for p in (c["seg"], c["sr"]))
        series = {s["MainDicomTags"]["SeriesInstanceUID"]: s for s in server.study_series(seg.StudyInstanceUID)}
        source_uid = seg.ReferencedSeriesSequence[0].SeriesInstanceUID
        assert source_uid in series and sources[source_uid]["study"] == seg.StudyInstanceUID
        assert series[seg.SeriesInstanceUID]["MainDicomTags"]["Modality"] == "SEG"
        assert series[sr.SeriesInstanceUID]["MainDicomTags"]["Modality"] == "SR"


def test_read_back_from_the_pacs_gives_the_same_candidates(cases, orthanc, tmp_path):
    server = need(orthanc)
    for c in cases:
        for kind in ("seg", "sr"):
            uid = pydicom.dcmread(c[kind], stop_before_pixels=True).SOPInstanceUID
            (tmp_path / f"{c['case']}_{kind}.dcm").write_bytes(server.instance_file(server.lookup(uid, "Instance")))
        pulled = {**c, "seg": tmp_path / f"{c['case']}_seg.dcm"}
        if SEGIMAGE2ITK:
            check_seg_against_map(pulled["seg"], pulled, tmp_path / f"{c['case']}-seg")
            check_sr_against_lesion_list(tmp_path / f"{c['case']}_sr.dcm", pulled, tmp_path / f"{c['case']}-sr")
        for kind in ("seg", "sr"):  # what arrived is what was written (the archive rewrites only the file meta)
            assert pydicom.dcmread(tmp_path / f"{c['case']}_{kind}.dcm") == pydicom.dcmread(c[kind]), kind


def test_an_object_the_archive_drops_is_reported_not_arrived(cases, orthanc, tmp_path):
    """Orthanc's filter drops the SR while answering success: the C-FIND arrival check must say so."""
    server = need(orthanc)
    c = cases[0]
    sr = pydicom.dcmread(c["sr"])
    sr.PatientID = DROPPED_PATIENT
    sr.SOPInstanceUID = sr.file_meta.MediaStorageSOPInstanceUID = generate_uid(prefix=ROOT)
    dropped = tmp_path / "dropped_sr.dcm"
    sr.save_as(dropped)
    r = pdac("send", "--to", server.destination, str(c["seg"]), str(dropped))
    assert r.returncode == 6, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert "1 of 2 object(s) arrived; NOT arrived: dropped_sr.dcm (missing: the archive answered success" in last


# ---- refusals, through the CLI, before any work -----------------------------------------------------------------

@pytest.fixture(scope="module")
def one_series(sources, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("one-series")
    src = next(s for s in sources.values() if s["patient"] == "PHANTOM-1")
    shutil.copytree(src["folder"], folder / "series")
    return folder


def refused(args: list[str], one_series: Path, tmp_path: Path) -> str:
    out = tmp_path / "out"
    r = pdac("detect", str(one_series), "-o", str(out), *args, timeout=300)
    assert r.returncode == 6, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and "using weights" not in r.stderr  # refused before the models load
    assert not list(out.glob("*")), "nothing written"
    return r.stderr.strip().splitlines()[-1]


def test_unknown_called_ae_title_is_one_line(orthanc, one_series, tmp_path):
    server = need(orthanc)
    line = refused(["--send", f"NOSUCHAE@127.0.0.1:{server.dicom_port}"], one_series, tmp_path)
    assert line.endswith(f"DICOM send to NOSUCHAE@127.0.0.1:{server.dicom_port} failed: association rejected by "
                         "the archive (Called AE title not recognised)"), line


def test_refused_association_for_an_unknown_calling_ae_is_one_line(orthanc, one_series, tmp_path):
    server = need(orthanc)
    line = refused(["--send", server.destination, "--calling-ae", "STRANGER"], one_series, tmp_path)
    assert line.endswith("failed: association rejected by the archive (Calling AE title not recognised)"), line


def test_closed_port_and_silent_archive_are_one_line_each(one_series, tmp_path):
    line = refused(["--send", f"PACS@127.0.0.1:{free_port()}"], one_series, tmp_path / "closed")
    assert line.endswith("failed: connection refused (nothing listens on that port)"), line
    with socket.socket() as silent:  # accepts the TCP connection, never answers the association request
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        line = refused(["--send", f"PACS@127.0.0.1:{silent.getsockname()[1]}", "--send-timeout", "2"],
                       one_series, tmp_path / "silent")
    assert line.endswith("failed: the archive did not answer the association request within 2 s (timeout)"), line


def test_bad_destination_and_non_dicom_inputs_are_usage_errors(tmp_path):
    scans = str(REPO / "test" / "input" / "images" / "venous-ct")
    r = pdac("detect", scans, "-o", str(tmp_path / "a"), "--send", "ORTHANC@localhost")
    assert r.returncode == 2 and "expects AE@host:port" in r.stderr.strip().splitlines()[-1], r.stderr[-1000:]
    r = pdac("detect", scans, "-o", str(tmp_path / "b"), "--dicom-out")
    assert r.returncode == 2, r.stderr[-1000:]
    assert r.stderr.strip().splitlines()[-1].endswith("--dicom-out/--send: none of the inputs is a DICOM series")
