"""Inputs of `pdac detect`: image files, and folders holding image files and/or DICOM series.

A folder is searched for image files (.mha, .nii.gz, ...; not recursively, as before) and for DICOM series
(recursively): each image series (SeriesInstanceUID, grouped by GDCM) is one case, read with SimpleITK's
ImageSeriesReader with rescale slope/intercept applied, slices ordered by their position along the slice normal
(the geometry, never the file names). Non-image objects
(SR, SEG, RT, presentation states, ...) and single images are skipped; localizer images in a series are left
out; a series with mixed orientations, missing or uneven slices or a gantry tilt is refused when it is read.
Each skip or refusal is one log line.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from pdac.errors import InputError
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


@dataclass(frozen=True)
class _Header:
    path: Path
    origin: np.ndarray
    direction: np.ndarray  # 3x3, columns = row direction, column direction, slice normal
    size: tuple[int, ...]
    tags: dict[str, str]

    def tag(self, key: str) -> str:
        return self.tags.get(key, "").strip()


def _header(path: Path) -> _Header | None:
    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    tags = {k: reader.GetMetaData(k) for k in ("0008|0008", "0008|0016", "0008|0060", "0008|103e", "0020|0011")
            if reader.HasMetaDataKey(k)}
    return _Header(path, np.asarray(reader.GetOrigin()), np.asarray(reader.GetDirection()).reshape(3, 3),
                   tuple(reader.GetSize()), tags)


def _non_image_reason(first: _Header) -> str | None:
    modality = first.tag("0008|0060").upper()
    if modality in NON_IMAGE_MODALITIES:
        return f"not an image series (modality {modality})"
    sop = first.tag("0008|0016")
    for prefix, what in NON_IMAGE_SOP_CLASSES.items():
        if sop.startswith(prefix):
            return f"not an image series ({what})"
    return None


def _geometry_problem(headers: list[_Header]) -> str | None:
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


def _series_in(folder: Path) -> tuple[list[DicomSeries], int]:
    """The image series in one folder (not recursive), and how many of its files belong to none."""
    candidates = [f for f in folder.iterdir() if f.is_file() and not f.name.startswith(".") and not image_suffix(f)]
    if not candidates:
        return [], 0
    if not utf8_name(folder) or not all(utf8_name(f) for f in candidates):
        # GDCM scans the folder itself, and its native code aborts the process on such a name
        log.warning("%s: DICOM files not searched: a file or folder name is not valid UTF-8 (rename it)",
                    shown(folder))
        return [], len(candidates)
    found: list[DicomSeries] = []
    used = 0
    with _quiet_itk():
        uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
        for uid in uids:
            files = [Path(f) for f in sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)]
            used += len(files)
            headers = [h for h in map(_header, files) if h is not None]
            if not headers:
                continue
            first = headers[0]
            case = series_case_id(first.tag("0008|103e") or first.tag("0008|0060"), uid, folder)
            where = f"{folder}: DICOM series {case}"
            reason = _non_image_reason(first)
            if reason:
                log.warning("%s skipped: %s", where, reason)
                continue
            images = [h for h in headers if "LOCALIZER" not in h.tag("0008|0008").upper()]
            if len(images) < len(headers):
                if not images:
                    log.warning("%s skipped: localizer images only", where)
                    continue
                log.warning("%s: left out %d localizer image(s)", where, len(headers) - len(images))
            # GDCM orders by the first file's normal, which may be a localizer's: order the rest ourselves
            normal = images[0].direction[:, 2]
            images.sort(key=lambda h: float(h.origin @ normal))
            if len(images) == 1:
                if images[0].size[2:] and images[0].size[2] > 1:
                    log.warning("%s skipped: multi-frame (enhanced) DICOM is not supported; convert it to "
                                ".nii.gz or .mha", where)
                else:
                    log.warning("%s skipped: a single image, not a volume", where)
                continue
            found.append(DicomSeries(folder, uid, tuple(h.path for h in images), case, _geometry_problem(images)))
    return found, len(candidates) - used


def find_dicom_series(root: Path) -> list[DicomSeries]:
    """Every DICOM image series in `root` and its subfolders (hidden folders excepted)."""
    series: list[DicomSeries] = []
    for folder, subfolders, _ in walk(root):  # bounded depth, no recursion
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
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
