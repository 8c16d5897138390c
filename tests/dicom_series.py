"""Test helpers: CT image series written with pydicom (one file per slice), from SimpleITK images such as the
phantoms, and a copy of the real series (tests/data/real-ct, anonymised with blank UIDs) with UIDs set.

The files say where each slice is (Image Position / Orientation (Patient)); whatever the image's direction
matrix (flipped, oblique, left-handed), the slices are written in index order and a reader must sort them by
geometry. UIDs are made under the example root that tests/test_dicom.py uses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

REPO = Path(__file__).resolve().parent.parent
REAL_SERIES = REPO / "tests" / "data" / "real-ct" / "example_ct_dicom"
ROOT = "1.2.826.0.1.3680043.8.498."


def _ds(v: float) -> str:
    return f"{v:.6f}".rstrip("0").rstrip(".") if abs(v) >= 1e-6 else "0"


def write_ct_series(image: sitk.Image, folder: Path, *, patient_id: str, patient_name: str, study_uid: str,
                    series_number: int = 3, description: str = "phantom venous", accession: str = "ACC0001",
                    study_id: str = "S1") -> str:
    """`image` (HU) as a CT Image Storage series in `folder` (IM0000, IM0001, ... in index order); returns the
    Series Instance UID."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid(prefix=ROOT)
    frame_uid = generate_uid(prefix=ROOT)
    arr = sitk.GetArrayFromImage(image)
    pixels = np.clip(np.round(arr), -2048, 4095).astype(np.int16)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    sx, sy, sz = image.GetSpacing()
    for k in range(arr.shape[0]):
        sop_uid = generate_uid(prefix=ROOT)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20260101"
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
        ds.AccessionNumber = accession
        ds.Modality = "CT"
        ds.Manufacturer = "pdac test phantom"
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "synthetic phantom study"
        ds.SeriesDescription = description
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.PatientBirthDate = "19600101"
        ds.PatientSex = "O"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = study_id
        ds.SeriesNumber = series_number
        ds.InstanceNumber = k + 1
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.PatientPosition = "HFS"
        ds.ImagePositionPatient = [_ds(v) for v in image.TransformIndexToPhysicalPoint((0, 0, k))]
        ds.ImageOrientationPatient = [_ds(v) for v in (*direction[:, 0], *direction[:, 1])]
        ds.PixelSpacing = [_ds(sy), _ds(sx)]
        ds.SliceThickness = _ds(sz)
        ds.KVP = "120"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = pixels.shape[1:]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = "0"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.PixelData = pixels[k].tobytes()
        ds.save_as(folder / f"IM{k:04d}", enforce_file_format=True)
    return series_uid


def copy_real_series(folder: Path, *, patient_id: str, patient_name: str, study_uid: str) -> str:
    """The real 20-slice series (pixels untouched, JPEG 2000 as stored) with Study, Series, SOP Instance, SOP Class
    and Frame of Reference UIDs set, which its anonymiser had blanked; returns the Series Instance UID."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid(prefix=ROOT)
    frame_uid = generate_uid(prefix=ROOT)
    for i, src in enumerate(sorted(REAL_SERIES.iterdir())):
        ds = pydicom.dcmread(src)
        sop_uid = generate_uid(prefix=ROOT)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.PatientID = patient_id
        ds.PatientName = patient_name
        ds.save_as(folder / f"CT{i:04d}.dcm", enforce_file_format=True)
    return series_uid
