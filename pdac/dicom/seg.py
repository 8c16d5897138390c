"""DICOM Segmentation (BINARY) of one case on its source series' geometry, written with highdicom.

Segment i (1, 2, ...) is the i-th lesion candidate of the lesion list (most likely first), its likelihood in the
label and description; the last segment is the stage-1 pancreas mask that the crop was made from (nearest-
neighbour on the source grid, so its 4.5 x 4.5 x 9 mm blocks show). Frames reference their source slices; Patient
and Study identifiers are copied from the source by highdicom; only the new series and instance get new UIDs.
"""

from __future__ import annotations

from dataclasses import dataclass

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from pdac.dicom.producer import LO_MAX, MANUFACTURER, Producer
from pdac.dicom.source import SourceSeries
from pdac.errors import PdacError

LESION_COLOUR = (255, 40, 40)
PANCREAS_COLOUR = (250, 210, 60)
PANCREAS_LABEL = "pancreas (stage 1)"


@dataclass(frozen=True)
class Segment:
    number: int
    label: str
    kind: str  # "lesion" or "pancreas"
    tracking_uid: str
    voxels: int
    lesion: int | None = None  # index into the lesion list


def lesion_label(index: int, likelihood: float) -> str:
    return f"PDAC candidate {index} p={likelihood:.3f}"


def plan_segments(lesions: list[dict], lesion_labels: np.ndarray, pancreas: np.ndarray | None) -> list[Segment]:
    """The segments in order; refuses (PdacError) a label volume that does not hold the lesion list's candidates."""
    counts = np.bincount(lesion_labels.ravel(), minlength=len(lesions) + 1)
    if len(counts) != len(lesions) + 1 or any(int(counts[i + 1]) != int(le["voxels"]) for i, le in enumerate(lesions)):
        raise PdacError(f"lesion label volume ({len(counts) - 1} labels) does not match the lesion list "
                        f"({len(lesions)} candidates); no DICOM outputs")
    segments = [Segment(i, lesion_label(i, le["likelihood"]), "lesion", hd.UID(), int(le["voxels"]), i - 1)
                for i, le in enumerate(lesions, start=1)]
    if pancreas is not None and pancreas.any():
        segments.append(Segment(len(segments) + 1, PANCREAS_LABEL, "pancreas", hd.UID(), int(pancreas.sum())))
    return segments


def _description(segment: Segment, lesions: list[dict], producer: Producer) -> hd.seg.SegmentDescription:
    if segment.kind == "lesion":
        category, kind, colour = codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Lesion, LESION_COLOUR
    else:
        category, kind, colour = codes.SCT.AnatomicalStructure, codes.SCT.Pancreas, PANCREAS_COLOUR
    description = hd.seg.SegmentDescription(
        segment_number=segment.number,
        segment_label=segment.label[:LO_MAX],
        segmented_property_category=category,
        segmented_property_type=kind,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=producer.algorithm(),
        tracking_uid=segment.tracking_uid,
        tracking_id=segment.label[:LO_MAX],
        display_color=hd.color.CIELabColor.from_rgb(*colour),
    )
    if segment.kind == "lesion":
        lesion = lesions[segment.lesion]
        text = (f"PDAC lesion candidate {segment.number} of {len(lesions)}: likelihood {lesion['likelihood']:.6f}, "
                f"volume {lesion['volume_mm3']:.1f} mm3")
    else:
        text = "pancreas as segmented by stage 1 (4.5 x 4.5 x 9 mm grid), the region the lesion search was cropped to"
    if producer.caveat:
        text += f"; {producer.caveat}"
    description.SegmentDescription = text[:1024]  # ST
    return description


def build_seg(source: SourceSeries, lesions: list[dict], lesion_labels: np.ndarray, pancreas: np.ndarray | None,
              producer: Producer) -> tuple[Dataset, list[Segment]] | None:
    """The SEG and its segments, or None when there is nothing to segment (no candidate, no pancreas).
    `lesion_labels` and `pancreas` are (z, y, x) arrays on the grid of `source` (slice k = source.datasets[k])."""
    segments = plan_segments(lesions, lesion_labels, pancreas)
    if not segments:
        return None
    shape = (len(source.datasets), int(source.first.Rows), int(source.first.Columns))
    if lesion_labels.shape != shape or (pancreas is not None and pancreas.shape != shape):
        raise PdacError(f"segmentation arrays {lesion_labels.shape} do not match the source series {shape}")
    frames = np.zeros((*shape, len(segments)), dtype=np.uint8)
    for s in segments:
        frames[..., s.number - 1] = (lesion_labels == s.number) if s.kind == "lesion" else pancreas
    first = source.first
    seg = hd.seg.Segmentation(
        source_images=list(source.datasets),
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[_description(s, lesions, producer) for s in segments],
        series_instance_uid=hd.UID(),
        series_number=9000 + int(first.get("SeriesNumber") or 0) % 1000,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER[:LO_MAX],
        manufacturer_model_name=producer.model_name[:LO_MAX],
        software_versions=producer.software_versions,
        device_serial_number=producer.serial,
        content_description=("PDAC lesion candidates and stage-1 pancreas" +
                             (" (SYNTHETIC weights)" if producer.synthetic else ""))[:LO_MAX],
        content_label="PDAC_CANDIDATES",
        series_description=producer.series_description("PDAC SEG"),
    )
    return seg, segments
