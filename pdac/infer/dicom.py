"""Inputs of `pdac detect`: image files, and folders holding image files and/or DICOM series.

A folder is searched for image files (.mha, .nii.gz, ...; not recursively, as before) and for DICOM series
(recursively; symlinked sub-folders are named, not followed). Every regular file's header is read by
pdac.infer.dicom_files (FIFOs and other special files are never opened) and checked against its pixel data's
extent; files are grouped by Series Instance UID; each image series is one case, read with SimpleITK's
ImageSeriesReader from exactly those files, rescale slope/intercept applied, slices ordered by their position
along the slice normal (the geometry, never the file names). Non-image objects (SR, SEG, RT, presentation
states, ...) and single images are skipped; localizer images in a series are left out. A series is read
completely or refused with its true reason: a truncated or forged slice, a file in its folder that cannot be
read, mixed orientations, missing or uneven slices, a gantry tilt. Each skip or refusal is one log line."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from pdac.errors import InputError
from pdac.infer.dicom_files import Header, Unreadable, read_header, special_file
from pdac.infer.geometry import check_geometry
from pdac.infer.io import MAX_VOXELS, case_id, find_images, image_suffix, read_image, shown, utf8_name
from pdac.safe_read import walk

log = logging.getLogger(__name__)

NON_IMAGE_MODALITIES = {"SR", "SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "PR", "KO", "REG", "DOC",
                        "FID", "PLAN", "RWV"}
NON_IMAGE_SOP_CLASSES = {  # prefixes of SOP Class UIDs without a scan in them
    "1.2.840.10008.5.1.4.1.1.88.": "structured report",
    "1.2.840.10008.5.1.4.1.1.66": "segmentation / registration / fiducials",
    "1.2.840.10008.5.1.4.1.1.481.": "radiotherapy object",
    "1.2.840.10008.5.1.4.1.1.11.": "presentation state",
    "1.2.840.10008.5.1.4.1.1.104.": "encapsulated document",
}
ORIENTATION_TOLERANCE = 1e-3  # direction cosines
POSITION_TOLERANCE_MM = 0.05  # and 5% of the slice spacing


@dataclass(frozen=True)
class ScanFile:
    """An image file (.mha, .nii.gz, ...): read with io.read_image's header guards."""

    path: Path

    @property
    def case_id(self) -> str:
        return case_id(self.path)

    def read(self) -> sitk.Image:
        return read_image(self.path)

    def __str__(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class DicomSeries:
    """One DICOM image series; `problem` (if any) is raised as a one-line InputError when it is read."""

    folder: Path
    uid: str
    files: tuple[Path, ...]  # ordered along the slice normal
    case_id: str
    problem: str | None = None

    def read(self) -> sitk.Image:
        if self.problem:
            raise InputError(f"{self.folder}: {self.problem}")
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames([str(f) for f in self.files])
        try:
            with _quiet_itk():
                image = reader.Execute()
        except RuntimeError as e:
            lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
            raise InputError(f"{self.folder}: cannot read DICOM series "
                             f"({lines[-1][:160] if lines else 'unreadable'})") from None
        check_geometry(image, f"{self.folder}: DICOM series {self.case_id}", InputError)
        return sitk.Cast(image, sitk.sitkFloat32) if image.GetPixelID() != sitk.sitkFloat32 else image

    def __str__(self) -> str:
        return f"{self.folder} (DICOM series {self.uid or 'without UID'}, {len(self.files)} files)"


Case = ScanFile | DicomSeries


@contextmanager
def _quiet_itk():
    """ITK prints multi-line warnings to stderr (e.g. 'No Series were found'); our log says it in one line."""
    was = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(was)


def safe_name(text: str) -> str:
    """Filesystem-safe, readable: letters, digits, '.', '-', '+'; everything else becomes '_'."""
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("._-")[:48]


def series_case_id(description: str, uid: str, folder: Path) -> str:
    """Series description plus the UID's last 8 digits (or the folder's name for a series without a UID)."""
    suffix = re.sub(r"\D", "", uid)[-8:] or safe_name(folder.name) or "series"
    return f"{safe_name(description) or 'series'}_{suffix}"


def _non_image_reason(first: Header) -> str | None:
    modality = first.tag("0008|0060").upper()
    if modality in NON_IMAGE_MODALITIES:
        return f"not an image series (modality {modality})"
    sop = first.tag("0008|0016")
    for prefix, what in NON_IMAGE_SOP_CLASSES.items():
        if sop.startswith(prefix):
            return f"not an image series ({what})"
    return None


def _geometry_problem(headers: list[Header]) -> str | None:
    """Why the slices do not make one regular volume, or None."""
    direction = headers[0].direction
    if any(np.abs(h.direction - direction).max() > ORIENTATION_TOLERANCE for h in headers):
        return "slices with different orientations (localizer or several stacks in one series?)"
    if len({h.size[:2] for h in headers}) > 1:
        return "slices of different sizes"
    normal = direction[:, 2]
    along = np.array([h.origin @ normal for h in headers])
    steps = np.diff(along)
    if np.any(np.abs(steps) < POSITION_TOLERANCE_MM):
        return (f"{int(np.sum(np.abs(steps) < POSITION_TOLERANCE_MM))} slice(s) at the position of another "
                "(several phases or reconstructions in one series?)")
    spacing = np.abs(steps)
    if spacing.max() - spacing.min() > max(POSITION_TOLERANCE_MM, 0.05 * float(np.median(spacing))):
        return (f"uneven slice spacing ({spacing.min():.2f}-{spacing.max():.2f} mm along the slice normal): "
                "missing or extra slices")
    in_plane = np.array([h.origin - headers[0].origin for h in headers]) @ direction[:, :2]
    if np.abs(in_plane).max() > max(POSITION_TOLERANCE_MM, 0.05 * float(np.median(spacing))):
        return "slices shifted in-plane (gantry tilt?): resample the series first"
    size = headers[0].size
    if size[0] * size[1] * len(headers) > MAX_VOXELS:
        return f"{size[0]}x{size[1]}x{len(headers)} voxels exceeds the limit of {MAX_VOXELS:,} voxels"
    return None


def _files_in(folder: Path) -> tuple[list[Header], list[str], int]:
    """Headers of the DICOM image files in one folder (not recursive); '<name>: <why>' for each file that cannot
    be read; how many files are not DICOM images. Special files (FIFOs, sockets, ...) are never opened."""
    headers, unreadable, other = [], [], 0
    for f in sorted(folder.iterdir()):
        if f.name.startswith(".") or image_suffix(f):
            continue
        if not utf8_name(f):  # SimpleITK cannot be handed such a name
            unreadable.append(f"{shown(f.name)}: file name is not valid UTF-8 (rename it)")
            continue
        try:
            kind = special_file(f)  # one stat per entry (links followed)
            if kind == "folder":  # searched by find_dicom_series's walk, or a symlinked folder it names
                continue
            if kind:
                log.warning("%s: not a regular file (%s), skipped", shown(f), kind)
                continue
            header = read_header(f)
        except Unreadable as e:
            unreadable.append(f"{shown(f.name)}: {e}")
            continue
        if header is None:
            other += 1
        else:
            headers.append(header)
    return headers, unreadable, other


def _series_in(folder: Path) -> tuple[list[DicomSeries], int]:
    """The image series in one folder (not recursive), and how many of its files belong to none."""
    headers, unreadable, other = _files_in(folder)
    by_uid: dict[str, list[Header]] = {}
    for h in headers:
        by_uid.setdefault(h.series_uid, []).append(h)
    if unreadable and not by_uid:
        log.warning("%s: %d file(s) cannot be read (%s)", shown(folder), len(unreadable), unreadable[0])
    found: list[DicomSeries] = []
    for uid, members in by_uid.items():
        first = next((h for h in members if h.tags), members[0])
        case = series_case_id(first.tag("0008|103e") or first.tag("0008|0060"), uid, folder)
        where = f"{folder}: DICOM series {case}"
        reason = _non_image_reason(first)
        if reason:
            log.warning("%s skipped: %s", where, reason)
            continue
        images = [h for h in members if "LOCALIZER" not in h.tag("0008|0008").upper()]
        if len(images) < len(members):
            if not images:
                log.warning("%s skipped: localizer images only", where)
                continue
            log.warning("%s: left out %d localizer image(s)", where, len(members) - len(images))
        broken = [h for h in images if h.problem]
        if broken:
            problem = f"{shown(broken[0].path.name)}: {broken[0].problem}" + (
                f" (and {len(broken) - 1} more file(s))" if len(broken) > 1 else "")
        elif unreadable:
            problem = (f"{len(unreadable)} file(s) in the folder cannot be read ({unreadable[0]}): the series may "
                       "be incomplete")
        else:
            problem = None
        if problem is None:
            # order along the slice normal of the first image (never the file names)
            normal = images[0].direction[:, 2]
            images.sort(key=lambda h: float(h.origin @ normal))
            if len(images) == 1:
                if images[0].size[2] > 1:
                    log.warning("%s skipped: multi-frame (enhanced) DICOM is not supported; convert it to "
                                ".nii.gz or .mha", where)
                else:
                    log.warning("%s skipped: a single image, not a volume", where)
                continue
            problem = _geometry_problem(images)
        found.append(DicomSeries(folder, uid, tuple(h.path for h in images), case, problem))
    return found, other


def find_dicom_series(root: Path) -> list[DicomSeries]:
    """Every DICOM image series in `root` and its subfolders (hidden folders excepted; symlinked folders are
    named in a warning, not followed: pass their target instead)."""
    series: list[DicomSeries] = []

    def unreadable(e: OSError) -> None:
        log.warning("%s: folder cannot be read (%s); any series in it is left out", shown(e.filename or root),
                    e.strerror or e)

    for folder, subfolders, _ in walk(root, onerror=unreadable):  # bounded depth, no recursion
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        for d in subfolders:
            if os.path.islink(os.path.join(folder, d)):
                log.warning("%s: symbolic link to a folder, not followed (pass its target to search it)",
                            shown(Path(folder) / d))
        if not utf8_name(Path(folder)):
            log.warning("%s: DICOM files not searched: the folder name is not valid UTF-8 (rename it)",
                        shown(folder))
            continue
        found, ignored = _series_in(Path(folder))
        series.extend(found)
        if ignored:
            log.info("%s: %d file(s) ignored (not in a DICOM image series: other files, or DICOM without pixel "
                     "data such as SR)", folder, ignored)
    return series


def find_cases(paths: Iterable[Path]) -> list[Case]:
    """Image files among `paths` (folders expanded as io.find_images does) plus the DICOM series in folders."""
    cases: list[Case] = []
    for p in map(Path, paths):
        cases.extend(ScanFile(f) for f in find_images([p]))
        if p.is_dir():
            cases.extend(find_dicom_series(p))
    return cases
