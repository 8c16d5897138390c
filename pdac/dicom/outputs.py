"""The DICOM outputs of one case, from the same record as its lesion list: `<case>_seg.dcm` (when there is a
candidate or a pancreas to segment) and `<case>_sr.dcm`."""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import Comprehensive3DSRStorage, SegmentationStorage

from pdac.dicom.producer import Producer
from pdac.dicom.seg import build_seg
from pdac.dicom.source import SourceSeries
from pdac.dicom.sr import build_sr

SOP_CLASSES = (SegmentationStorage, Comprehensive3DSRStorage)


def case_objects(source: SourceSeries, record: dict, lesion_labels: np.ndarray,
                 pancreas: np.ndarray | None) -> dict[str, Dataset]:
    """{"seg": ..., "sr": ...} for one case. `record` is the lesion list (likelihood, lesions, pancreas,
    provenance); `lesion_labels` (label i = lesion i) and `pancreas` are (z, y, x) arrays on the source grid."""
    producer = Producer.from_provenance(record.get("provenance") or {})
    seg = build_seg(source, record["lesions"], lesion_labels, pancreas, producer)
    objects = {"seg": seg[0]} if seg else {}
    objects["sr"] = build_sr(source, record, seg, producer)
    return objects


def save(ds: Dataset, path: str) -> None:
    ds.save_as(path, enforce_file_format=True)
