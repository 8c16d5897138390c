"""`pdac detect --dicom-out / --send`: the batch's side of the DICOM outputs (pdac.dicom writes and sends them).

For each DICOM series case: its headers are read and matched to the image's grid before the pipeline runs (a
series that cannot be referenced is refused in one line, as a failed case); after it, the detection map's
candidates (label i = lesion i of the lesion list) and the stage-1 pancreas mask (nearest neighbour on the
scan's grid) become `<case>_seg.dcm` and `<case>_sr.dcm` in the case's set of files; with a destination, they are
sent once the set is written, and the end of the run says what arrived.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import SimpleITK as sitk

from pdac.dicom.outputs import SOP_CLASSES, case_objects, save
from pdac.dicom.send import DEFAULT_CALLING_AE, DEFAULT_TIMEOUT_S, Destination, check_destination, send_files
from pdac.dicom.source import SourceSeries, on_grid, read_headers
from pdac.errors import SendError
from pdac.infer.candidates import lesion_labels
from pdac.infer.dicom import DicomSeries
from pdac.infer.geometry import resample_like

if TYPE_CHECKING:
    from pdac.infer.pipeline import CaseResult

log = logging.getLogger(__name__)


@dataclass
class DicomOut:
    destination: Destination | None = None
    calling_ae: str = DEFAULT_CALLING_AE
    timeout_s: float = DEFAULT_TIMEOUT_S
    not_arrived: dict[str, str] = field(default_factory=dict)  # case -> the send report's line
    sent: int = 0

    def check_destination(self) -> None:
        if self.destination:
            check_destination(self.destination, SOP_CLASSES, self.calling_ae, self.timeout_s)

    def source_headers(self, source, scan: sitk.Image) -> SourceSeries | None:
        """The series' headers on the scan's grid; None (and one log line) for an input that is not DICOM."""
        if not isinstance(source, DicomSeries):
            log.warning("%s: not a DICOM series: no DICOM outputs", source.case_id)
            return None
        return on_grid(source.folder, read_headers(source.folder, source.files), scan)

    def writers(self, out: Path, case: str, source: SourceSeries, result: CaseResult, record: dict) -> list:
        """(path, writer) pairs for write_files_atomic."""
        labels = lesion_labels(sitk.GetArrayViewFromImage(result.detection_map))
        pancreas = None
        if result.pancreas_mask is not None and result.pancreas_found:  # the mask the crop was made from
            pancreas = sitk.GetArrayFromImage(resample_like(result.pancreas_mask, result.detection_map)) > 0
        objects = case_objects(source, record, labels, pancreas)
        return [(out / f"{case}_{kind}.dcm", lambda tmp, ds=ds: save(ds, tmp)) for kind, ds in objects.items()]

    def send(self, case: str, files: list[Path]) -> None:
        if not self.destination:
            return
        report = send_files(self.destination, files, self.calling_ae, self.timeout_s)
        self.sent += len(files)
        if report.complete:
            log.info("%s: %s", case, report.summary())
        else:
            self.not_arrived[case] = report.summary()
            log.error("%s: %s", case, report.summary())

    def finish(self) -> bool:
        """True when every object arrived (or nothing was to be sent); else one closing line naming the cases."""
        if not self.destination or not self.not_arrived:
            return True
        cases = ", ".join(self.not_arrived)
        log.error("%s", SendError(f"DICOM send to {self.destination}: objects of {len(self.not_arrived)} case(s) did "
                                  f"not all arrive ({cases}); resend their files with `pdac send --to "
                                  f"{self.destination} FILES`"))
        return False
