"""Comprehensive 3D SR: a TID 1500 measurement report of one case, written with highdicom.

- Observer: the model (device observer; name and version from the model card, its UID derived from them and the
  weights' manifest hash, so one set of weights is one device).
- Imaging measurements: (1) the patient-level PDAC likelihood ("Probability of cancer", no units, finding site
  pancreas); (2) per lesion candidate a volumetric group that references its SEG segment, with its likelihood,
  its volume (mm3) and its centroid (an SCOORD3D point "Center of Mass" in the source's frame of reference);
  (3) the stage-1 pancreas' volume, referencing its segment.
- Qualitative evaluations (TID 1500 row 12): text lines for the stage-1 plausibility, its warnings and the
  weights' caveat (synthetic, or no model card).
Evidence: the source series and the SEG, so the report lands in the source study.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from pdac.dicom.producer import LO_MAX, MANUFACTURER, Producer
from pdac.dicom.seg import Segment
from pdac.dicom.source import SourceSeries

QUALITATIVE_EVALUATIONS = Code("C0034375", "UMLS", "Qualitative Evaluations")  # TID 1500 row 12
PATIENT_LIKELIHOOD_ID = "patient-level PDAC likelihood"
UT_MAX = 1024  # keep each text line short enough for any viewer


def plausibility_lines(pancreas: dict) -> list[str]:
    """The stage-1 plausibility record as sentences."""
    if not pancreas:
        return []
    if not pancreas.get("found"):
        return ["stage-1 pancreas: not found; the lesion search used a fallback box around the scan centre"]
    what = "plausible" if pancreas.get("plausible", True) else "IMPLAUSIBLE"
    hu = pancreas.get("median_hu")
    lines = [f"stage-1 pancreas: {what} (volume {pancreas.get('volume_ml', 0):.1f} ml"
             + (f", median {hu:.0f} HU" if hu is not None else "") + ")"]
    lines += [f"stage-1 warning: {r}" for r in pancreas.get("reasons") or []]
    return lines


def _text(line: str) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(name=codes.DCM.Comment, value=line[:UT_MAX],
                                 relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)


def _likelihood(value: float, producer: Producer) -> hd.sr.Measurement:
    return hd.sr.Measurement(name=codes.DCM.ProbabilityOfCancer, value=float(value), unit=codes.UCUM.NoUnits,
                             algorithm_id=producer.sr_algorithm())


def _volume(mm3: float) -> hd.sr.Measurement:
    return hd.sr.Measurement(name=codes.SCT.Volume, value=float(mm3), unit=codes.UCUM.CubicMillimeter)


def _segment_group(seg: Dataset, segment: Segment, source: SourceSeries, producer: Producer,
                   measurements: list[hd.sr.Measurement], finding: Code
                   ) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    reference = hd.sr.ReferencedSegment(
        sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID, segment_number=segment.number,
        source_series=hd.sr.SourceSeriesForSegmentation(source.series_uid))
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=segment.tracking_uid, identifier=segment.label[:LO_MAX]),
        referenced_segment=reference, finding_type=finding, algorithm_id=producer.sr_algorithm(),
        finding_sites=[hd.sr.FindingSite(codes.SCT.Pancreas)], measurements=measurements)


def build_sr(source: SourceSeries, record: dict, seg_and_segments: tuple[Dataset, list[Segment]] | None,
             producer: Producer) -> Dataset:
    """The report for one case; `record` is the case's lesion list (likelihood, lesions, pancreas)."""
    lesions = record["lesions"]
    groups: list = [hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=PATIENT_LIKELIHOOD_ID),
        finding_type=codes.SCT.AdenocarcinomaOfPancreas, algorithm_id=producer.sr_algorithm(),
        finding_sites=[hd.sr.FindingSite(codes.SCT.Pancreas)],
        measurements=[_likelihood(record["likelihood"], producer)])]
    seg = None
    if seg_and_segments:
        seg, segments = seg_and_segments
        frame_uid = str(source.first.FrameOfReferenceUID)
        for segment in segments:
            if segment.kind == "lesion":
                lesion = lesions[segment.lesion]
                group = _segment_group(seg, segment, source, producer,
                                       [_likelihood(lesion["likelihood"], producer), _volume(lesion["volume_mm3"])],
                                       codes.SCT.Lesion)
                group[0].ContentSequence.append(hd.sr.Scoord3DContentItem(
                    name=codes.DCM.CenterOfMass, graphic_type=hd.sr.GraphicTypeValues3D.POINT,
                    graphic_data=np.asarray([lesion["centroid_world_mm"]], dtype=float),
                    frame_of_reference_uid=frame_uid, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS))
            else:
                spacing = [float(v) for v in source.first.PixelSpacing]
                thickness = abs(_slice_step(source))
                group = _segment_group(seg, segment, source, producer,
                                       [_volume(round(segment.voxels * spacing[0] * spacing[1] * thickness, 1))],
                                       codes.SCT.Pancreas)
            groups.append(group)
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.cid270.Device,
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=generate_uid(entropy_srcs=[producer.model_name, producer.model_version, producer.weights_sha256]),
                name=producer.model_name[:LO_MAX], manufacturer_name=MANUFACTURER[:LO_MAX],
                model_name=f"{producer.model_name} {producer.model_version}"[:LO_MAX],
                serial_number=producer.serial))),
        procedure_reported=codes.cid100.CTUnspecifiedBodyRegion,
        imaging_measurements=groups)
    notes = plausibility_lines(record.get("pancreas") or {})
    if not lesions:
        notes.insert(0, "no lesion candidates")
    if producer.caveat:
        notes.insert(0, producer.caveat)
    if notes:
        container = hd.sr.ContainerContentItem(name=QUALITATIVE_EVALUATIONS,
                                               relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
        container.ContentSequence = hd.sr.ContentSequence([_text(line) for line in notes])
        report[0].ContentSequence.append(container)
    first = source.first
    return hd.sr.Comprehensive3DSR(
        evidence=[*source.datasets, *([seg] if seg is not None else [])],
        content=report[0],
        series_instance_uid=hd.UID(),
        series_number=9500 + int(first.get("SeriesNumber") or 0) % 500,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER[:LO_MAX],
        is_complete=True,
        series_description=producer.series_description("PDAC SR"),
    )


def _slice_step(source: SourceSeries) -> float:
    """Distance between the first two slices along the slice normal (the grid's z spacing), in mm."""
    if len(source.datasets) < 2:
        return float(source.first.get("SliceThickness") or 1.0)
    a, b = (np.asarray(ds.ImagePositionPatient, dtype=float) for ds in source.datasets[:2])
    orientation = np.asarray(source.first.ImageOrientationPatient, dtype=float)
    return float((b - a) @ np.cross(orientation[:3], orientation[3:]))
