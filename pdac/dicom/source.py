"""The source series of a case as the DICOM outputs need it: headers (no pixels) in the order of the case's image
grid, with the identifiers that the outputs copy.

The identifiers are copied from the source, never invented: a series without Study, Series, SOP Instance or
Frame of Reference UIDs (an anonymiser that blanked them) cannot be referenced and is refused in one line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue

from pdac.errors import InputError

SERIES_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID")
SLICE_UIDS = ("SOPClassUID", "SOPInstanceUID")
GEOMETRY = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns")
ORIENTATION_TOLERANCE = 1e-3  # direction cosines
POSITION_TOLERANCE = 0.05  # of a voxel


@dataclass(frozen=True)
class SourceSeries:
    """`datasets[k]` is the header of slice k of the case's image (index z = k)."""

    folder: Path
    datasets: tuple[Dataset, ...]

    @property
    def first(self) -> Dataset:
        return self.datasets[0]

    @property
    def study_uid(self) -> str:
        return str(self.first.StudyInstanceUID)

    @property
    def series_uid(self) -> str:
        return str(self.first.SeriesInstanceUID)


def _blank(ds: Dataset, keyword: str) -> bool:
    value = ds.get(keyword)
    if value is None:
        return True
    if isinstance(value, list | MultiValue):
        return len(value) == 0
    return str(value).strip() == ""


def read_headers(folder: Path, files: Sequence[Path]) -> list[Dataset]:
    """The slices' headers (pixel data not read); refuses missing identifiers in one line (InputError)."""
    datasets = []
    for f in files:
        try:
            datasets.append(pydicom.dcmread(f, stop_before_pixels=True))
        except (OSError, InvalidDicomError, ValueError) as e:
            raise InputError(f"{folder}: cannot read DICOM header of {Path(f).name} ({e})") from None
    missing = [k for k in SERIES_UIDS if _blank(datasets[0], k)]
    missing += sorted({k for ds in datasets for k in SLICE_UIDS + GEOMETRY if _blank(ds, k)})
    if missing:
        raise InputError(f"{folder}: no DICOM outputs possible: the series lacks {', '.join(missing)} "
                         "(anonymised without UIDs?); identifiers are copied from the source, never invented")
    for k in SERIES_UIDS:
        values = {str(ds.get(k)) for ds in datasets}
        if len(values) > 1:
            raise InputError(f"{folder}: no DICOM outputs possible: the slices disagree on {k}")
    if len({str(ds.SOPInstanceUID) for ds in datasets}) < len(datasets):
        raise InputError(f"{folder}: no DICOM outputs possible: two slices share a SOPInstanceUID")
    return datasets


def on_grid(folder: Path, datasets: Sequence[Dataset], grid: sitk.Image) -> SourceSeries:
    """The headers ordered by the slice index of `grid` (the case's image as read from them); refuses (one line)
    a slice that does not lie exactly on one of the grid's planes, so that frame k of every output is slice k."""
    size = grid.GetSize()
    spacing = np.asarray(grid.GetSpacing())
    direction = np.asarray(grid.GetDirection()).reshape(3, 3)
    origin = np.asarray(grid.GetOrigin())
    to_index = np.linalg.inv(direction * spacing)  # world mm -> continuous index (x, y, z)
    placed: dict[int, Dataset] = {}
    for ds in datasets:
        orientation = np.asarray(ds.ImageOrientationPatient, dtype=float)
        pixel = np.asarray(ds.PixelSpacing, dtype=float)  # (between rows, between columns)
        problem = None
        if (int(ds.Rows), int(ds.Columns)) != (size[1], size[0]):
            problem = f"{ds.Rows}x{ds.Columns} pixels, the image has {size[1]}x{size[0]}"
        elif np.abs(orientation - direction[:, :2].T.ravel()).max() > ORIENTATION_TOLERANCE:
            problem = "orientation differs from the image's"
        elif np.abs(pixel[::-1] - spacing[:2]).max() > 1e-3 * spacing[:2].max():
            problem = "pixel spacing differs from the image's"
        else:
            index = to_index @ (np.asarray(ds.ImagePositionPatient, dtype=float) - origin)
            k = int(round(index[2]))
            if np.abs(index - (0, 0, k)).max() > POSITION_TOLERANCE or not 0 <= k < size[2] or k in placed:
                problem = f"position {list(np.round(index, 3))} (voxels) is not a plane of the image"
            else:
                placed[k] = ds
        if problem:
            raise InputError(f"{folder}: slice {ds.SOPInstanceUID} does not match the image read from the series "
                             f"({problem}); no DICOM outputs")
    if len(placed) != size[2]:
        raise InputError(f"{folder}: {len(placed)} slices for an image of {size[2]}; no DICOM outputs")
    return SourceSeries(folder, tuple(placed[k] for k in range(size[2])))
