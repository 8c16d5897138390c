"""A DICOM series is read completely and correctly, or refused with the true reason (issue #30, class 5).

Each folder is a copy of the real 20-slice series (tests/data/real-ct) with one thing wrong: pixel data cut
short, a FIFO or a dangling link among the slices, a symlinked sub-folder, a slice declaring a huge matrix in
a tiny file. One `pdac detect` run over all of them checks the lines and exit status a user sees."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from conftest import REPO, pdac
from dicom_series import write_ct_series
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pdac.errors import InputError
from pdac.infer.dicom import find_cases

SERIES = REPO / "tests" / "data" / "real-ct" / "example_ct_dicom"
ORIGINALS = sorted(SERIES.iterdir())


def copy_series(folder: Path, uid_suffix: str, description: str) -> list[Path]:
    """The real series under its own Series Instance UID and description, slices named s00..s19."""
    folder.mkdir(parents=True)
    uid = pydicom.uid.generate_uid(prefix="1.2.826.0.1.3680043.8.498.", entropy_srcs=[uid_suffix])
    out = []
    for i, src in enumerate(ORIGINALS):
        ds = pydicom.dcmread(src)
        ds.SeriesInstanceUID = uid
        ds.SeriesDescription = description
        ds.SOPInstanceUID = pydicom.uid.generate_uid(prefix="1.2.826.0.1.3680043.8.498.")
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        out.append(folder / f"s{i:02d}")
        ds.save_as(out[-1], enforce_file_format=True)
    return out


def copy_originals(folder: Path) -> Path:
    """The real series' files, unchanged, in a new `folder`."""
    folder.mkdir()
    for src in ORIGINALS:
        (folder / src.name).write_bytes(src.read_bytes())
    return folder


def series_and_problem(folder: Path):
    (case,) = find_cases([folder])
    return case, case.problem


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dicom-class5")
    # pixel data shorter than Rows x Columns: the last 1000 bytes of one slice cut off
    short = copy_series(root / "short", "short", "Short pixels")
    data = short[7].read_bytes()
    short[7].write_bytes(data[:-1000])
    # a FIFO among the slices (GDCM's own folder scan stopped there)
    copy_series(root / "fifo", "fifo", "With fifo")
    os.mkfifo(root / "fifo" / "s09a")
    # a slice that cannot be read: a link to a file that is not there
    gone = copy_series(root / "gone", "gone", "Unreadable slice")
    gone[19].unlink()
    gone[19].symlink_to(root / "nowhere")
    # a huge matrix declared in a tiny file
    # a huge matrix declared in tiny files: three native (uncompressed) 64 x 64 slices whose headers say
    # 6000 x 6000 (within the per-slice and voxel limits, so only the pixel data's extent gives it away)
    small = sitk.Image([64, 64, 3], sitk.sitkInt16)
    small.SetSpacing((0.8, 0.8, 2.0))
    write_ct_series(small, root / "huge", patient_id="P1", patient_name="Huge^Matrix",
                    study_uid="1.2.826.0.1.3680043.8.498.99", description="Huge matrix")
    for f in sorted((root / "huge").iterdir()):
        ds = pydicom.dcmread(f)
        ds.Rows = ds.Columns = 6000
        ds.save_as(f, enforce_file_format=True)
    # a missing slice and an unrelated FIFO: the reason stays the missing slice
    missing = copy_series(root / "missing", "missing", "Missing slice")
    missing[10].unlink()
    os.mkfifo(root / "missing" / "zz-pipe")
    # a symlinked sub-folder holding a good series
    copy_series(root / "elsewhere" / "linked-target", "linked", "Linked")
    (root / "patient").mkdir()
    (root / "patient" / "linked").symlink_to(root / "elsewhere" / "linked-target", target_is_directory=True)
    return root


def test_pixel_data_shorter_than_the_matrix_is_refused(root):
    case, problem = series_and_problem(root / "short")
    assert problem and "s07" in problem and "truncated" in problem, problem
    with pytest.raises(InputError, match="truncated"):
        case.read()


def test_a_fifo_among_the_slices_neither_truncates_nor_hangs(root, caplog):
    case, problem = series_and_problem(root / "fifo")
    assert problem is None and len(case.files) == 20
    assert "s09a" in caplog.text and "not a regular file" in caplog.text
    image = case.read()
    reference = sitk.ReadImage([str(f) for f in sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(SERIES))])
    assert image.GetSize() == reference.GetSize()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(reference))


def test_a_slice_that_cannot_be_read_refuses_the_series(root):
    case, problem = series_and_problem(root / "gone")
    assert problem and "s19" in problem and "cannot be read" in problem, problem


def test_a_huge_matrix_in_a_tiny_file_is_refused_before_any_allocation(root):
    """In a fresh process, so the peak memory is this reading's own."""
    code = ("import resource; from pathlib import Path; from pdac.infer.dicom import find_cases\n"
            "def peak(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024\n"
            f"(c,) = find_cases([Path({str(root / 'huge')!r})])\n"
            "before = peak()\n"
            "try:\n    c.read()\nexcept Exception as e:\n    print('REFUSED', e)\n"
            "print('GROWTH_MB', peak() - before)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert "REFUSED" in r.stdout and "IM0000" in r.stdout and "truncated" in r.stdout, r.stdout + r.stderr[-2000:]
    growth = int(r.stdout.split("GROWTH_MB")[1])
    assert growth < 100, f"reading three tiny files took {growth} MB more memory"


def test_an_unrelated_special_file_does_not_change_the_reason(root):
    _, problem = series_and_problem(root / "missing")
    assert problem and "uneven slice spacing" in problem, problem


def test_through_the_cli_each_folder_gets_its_line(root, tmp_path):
    out = tmp_path / "out"
    r = pdac("detect", str(root), "-o", str(out), timeout=900)
    assert "Traceback" not in r.stderr
    assert r.returncode == 1, r.stderr[-3000:]
    lines = r.stderr.splitlines()

    def one(*fragments):
        hits = [ln for ln in lines if all(f in ln for f in fragments)]
        assert len(hits) == 1, (fragments, r.stderr[-4000:])

    one("ERROR", "Short_pixels", "truncated")
    one("ERROR", "Unreadable_slice", "cannot be read")
    one("ERROR", "Huge_matrix", "IM0000", "pixel data")
    one("ERROR", "Missing_slice", "uneven slice spacing")
    one("linked", "symbolic link", "not followed")
    one("s09a", "not a regular file")
    assert "done: 2 ok, 4 failed" in r.stderr  # the linked folder's target lies under the root as well
    assert any(p.name.startswith("With_fifo") for p in out.iterdir()), sorted(p.name for p in out.iterdir())
    assert not any(p.name.startswith(("Short", "Unreadable", "Huge", "Missing")) for p in out.iterdir())


def test_the_good_copy_is_unchanged_by_the_linked_folder(root):
    """Passing the link's target directly reads it (the link is only not followed while searching)."""
    case, problem = series_and_problem(root / "elsewhere" / "linked-target")
    assert problem is None and len(case.files) == 20


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(keep=st.integers(min_value=0, max_value=160_000), slice_index=st.integers(min_value=0, max_value=19))
def test_any_truncation_of_any_slice_is_refused_or_read_exactly(tmp_path_factory, keep, slice_index):
    """Property: a series with one slice cut at any byte is refused with a reason or read bit-exactly."""
    folder = tmp_path_factory.mktemp("cut") / "series"
    victim = copy_originals(folder) / ORIGINALS[slice_index].name
    victim.write_bytes(victim.read_bytes()[:keep])
    cases = find_cases([folder])
    assert len(cases) <= 1
    if not cases or cases[0].problem:
        return
    try:
        image = cases[0].read()
    except InputError:
        return
    reference = sitk.ReadImage([str(f) for f in sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(SERIES))])
    assert image.GetSize() == reference.GetSize()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(reference))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flips=st.lists(st.tuples(st.integers(min_value=0, max_value=5000), st.integers(min_value=1, max_value=255)),
                      min_size=1, max_size=8), slice_index=st.integers(min_value=0, max_value=19))
def test_corrupted_header_bytes_give_a_reason_never_a_traceback(tmp_path_factory, flips, slice_index):
    """Property: bytes changed anywhere in one slice's header end in a refusal with a reason, a skip, or a
    correct read; never an exception other than the one-line InputError."""
    folder = tmp_path_factory.mktemp("flip") / "series"
    victim = copy_originals(folder) / ORIGINALS[slice_index].name
    data = bytearray(victim.read_bytes())
    for offset, xor in flips:
        data[offset] ^= xor
    victim.write_bytes(bytes(data))
    for case in find_cases([folder]):
        if case.problem:
            assert case.problem.strip() and "\n" not in case.problem
            continue
        try:
            image = case.read()
        except InputError as e:
            assert "\n" not in str(e)
            continue
        assert image.GetSize()[:2] == (512, 512)
