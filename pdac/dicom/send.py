"""Sending DICOM files to an archive (C-STORE, pynetdicom), and checking that they arrived (C-FIND).

A destination is `AE@host:port` (the archive's AE title, its host and DICOM port). Every file gets one of:
- `arrived`: stored (success or warning status) and found again by a C-FIND on its SOP Instance UID;
- `stored`: stored, but the archive does not answer C-FIND, so arrival is taken from the status alone;
- `missing`: the archive answered success but a C-FIND does not find it (dropped by a filter, say);
- `refused`: the archive answered a failure status;
- `not sent`: the association failed or broke before it (refused, unknown AE title, timeout, connection lost).
Association problems are one line each (`SendError`, exit 6), naming the destination and the reason.
"""

from __future__ import annotations

import logging
import re
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

from pdac.errors import SendError, UsageError

log = logging.getLogger(__name__)

DEFAULT_CALLING_AE = "PDAC"
DEFAULT_TIMEOUT_S = 30.0
STORED_STATUSES = {0x0000, 0xB000, 0xB006, 0xB007}  # success and the storage warnings
MAX_FIND_RESPONSES = 100  # a C-FIND on one SOP Instance UID; more pending answers than this is a flood
MAX_PDU = 65536  # the largest PDU we offer to receive (the archive is told in the association request)
AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # 16 printable characters, no backslash


@dataclass(frozen=True)
class Destination:
    ae_title: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def check_ae_title(title: str, what: str = "AE title") -> str:
    if not AE_TITLE.match(title) or not title.strip():
        raise UsageError(f"{what} {title!r}: 1-16 printable characters without a backslash")
    return title


def parse_destination(text: str) -> Destination:
    """`AE@host:port` -> Destination; UsageError (one line) otherwise."""
    match = re.fullmatch(r"(?P<ae>[^@]+)@(?P<host>\[[^\]]+\]|[^:@]+):(?P<port>\d{1,5})", text.strip())
    if not match:
        raise UsageError(f"--send expects AE@host:port (e.g. ORTHANC@127.0.0.1:4242), got {text!r}")
    port = int(match["port"])
    if not 1 <= port <= 65535:
        raise UsageError(f"--send {text}: port must be 1-65535")
    return Destination(check_ae_title(match["ae"], "called AE title"), match["host"].strip("[]"), port)


@dataclass
class SendReport:
    destination: Destination
    outcome: dict[Path, str] = field(default_factory=dict)  # file -> arrived / stored / missing / refused / not sent
    reasons: dict[Path, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return all(v in ("arrived", "stored") for v in self.outcome.values())

    def summary(self) -> str:
        """One line: how many arrived, and every file that did not, with why."""
        ok = [p for p, v in self.outcome.items() if v in ("arrived", "stored")]
        unverified = sum(v == "stored" for v in self.outcome.values())
        line = f"DICOM send to {self.destination}: {len(ok)} of {len(self.outcome)} object(s) arrived"
        if unverified:
            line += f" ({unverified} not verified: the archive does not answer C-FIND)"
        bad = [f"{p.name} ({self.outcome[p]}: {self.reasons.get(p, '')})".replace(": )", ")")
               for p in self.outcome if p not in ok]
        if bad:
            line += f"; NOT arrived: {', '.join(bad)}"
        return line


@contextmanager
def _quiet_pynetdicom() -> Iterator[None]:
    """pynetdicom logs every network error over several lines; our one-line reasons say it (`-v` shows them)."""
    logger = logging.getLogger("pynetdicom")
    was = logger.level
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(was)


def one_line(text: object, limit: int = 200) -> str:
    """What a peer sent (an error comment, say), safe for a one-line log: control characters replaced, and cut."""
    clean = "".join(c if c.isprintable() else "?" for c in str(text)).strip()
    return clean if len(clean) <= limit else clean[:limit] + "..."


def _connect_problem(dest: Destination, timeout: float) -> str | None:
    """Why a TCP connection to the destination fails, or None when it opens."""
    try:
        with socket.create_connection((dest.host, dest.port), timeout=timeout):
            return None
    except socket.gaierror as e:
        return f"unknown host {dest.host!r} ({e.strerror})"
    except ConnectionRefusedError:
        return "connection refused (nothing listens on that port)"
    except TimeoutError:
        return f"no answer within {timeout:g} s (timeout)"
    except OSError as e:
        return f"cannot connect ({e.strerror or e})"


def _read_header(path: Path) -> Dataset:
    try:
        return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID", "SOPInstanceUID",
                                                                             "StudyInstanceUID", "SeriesInstanceUID"])
    except (OSError, InvalidDicomError, ValueError) as e:
        raise SendError(f"{path}: not a readable DICOM file ({e})") from None


class _Association:
    """One association for storing `sop_classes` (and C-FIND, to check arrival); SendError when it fails."""

    def __init__(self, dest: Destination, sop_classes: Sequence[str], calling_ae: str, timeout: float):
        ae = AE(ae_title=check_ae_title(calling_ae, "calling AE title"))
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout
        ae.maximum_pdu_size = MAX_PDU
        for uid in dict.fromkeys(sop_classes):
            ae.add_requested_context(uid, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        self.dest, self.timeout = dest, timeout
        started = time.monotonic()
        try:
            with _quiet_pynetdicom():
                self.assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title)
        except OSError as e:  # pynetdicom resolves the host name itself and lets its error through
            raise SendError(f"DICOM send to {dest} failed: {_connect_problem(dest, timeout) or one_line(e)}") from None
        self.waited = time.monotonic() - started
        if not self.assoc.is_established:
            raise SendError(f"DICOM send to {dest} failed: {self._why_not()}")
        accepted = {c.abstract_syntax for c in self.assoc.accepted_contexts}
        refused = [pydicom.uid.UID(u).name for u in dict.fromkeys(sop_classes) if u not in accepted]
        if refused:
            self.release()
            raise SendError(f"DICOM send to {dest} failed: the archive does not accept {', '.join(refused)}")
        self.can_find = StudyRootQueryRetrieveInformationModelFind in accepted

    def _why_not(self) -> str:
        if self.assoc.is_rejected:
            p = self.assoc.acceptor.primitive
            reason = p.reason_str if p is not None else "no reason given"
            return f"association rejected by the archive ({reason})"
        refused = [pydicom.uid.UID(c.abstract_syntax).name for c in self.assoc.rejected_contexts
                   if c.abstract_syntax != StudyRootQueryRetrieveInformationModelFind]  # optional for us
        if refused and not self.assoc.accepted_contexts:
            return f"the archive does not accept {', '.join(dict.fromkeys(refused))}"
        problem = _connect_problem(self.dest, self.timeout)
        if problem:
            return problem
        if self.waited < 0.9 * self.timeout:
            return ("the archive broke off the association request (closed the connection, aborted, or answered "
                    "with something that is not DICOM)")
        return f"the archive did not answer the association request within {self.timeout:g} s (timeout)"

    def store(self, path: Path) -> tuple[str, str]:
        try:
            with _quiet_pynetdicom():
                status = self.assoc.send_c_store(path)
        except (ValueError, RuntimeError, OSError, InvalidDicomError) as e:  # e.g. a transfer syntax not agreed
            return "not sent", one_line(e)
        if not self.assoc.is_established:
            return "not sent", "association lost (aborted or timed out)"
        if not status or "Status" not in status:
            return "not sent", f"no response within {self.timeout:g} s"
        code = int(status.Status)
        if code in STORED_STATUSES:
            return "stored", "" if code == 0 else f"warning status 0x{code:04X}"
        comment = f" {one_line(status.ErrorComment)}" if "ErrorComment" in status else ""
        return "refused", f"status 0x{code:04X}{comment}"

    def find(self, header: Dataset) -> bool | None:
        """Whether the archive has the instance (None: cannot tell)."""
        if not self.assoc.is_established:
            return None
        query = Dataset()
        query.QueryRetrieveLevel = "IMAGE"
        query.StudyInstanceUID = header.get("StudyInstanceUID", "")
        query.SeriesInstanceUID = header.get("SeriesInstanceUID", "")
        query.SOPInstanceUID = header.SOPInstanceUID
        found, answers = False, 0
        with _quiet_pynetdicom():
            for status, identifier in self.assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
                answers += 1
                if not status or "Status" not in status:
                    return None
                if answers > MAX_FIND_RESPONSES:  # a flood of pending answers: stop listening, trust nothing
                    log.warning("%s: over %d C-FIND answers for one instance; aborting the association",
                                self.dest, MAX_FIND_RESPONSES)
                    self.assoc.abort()
                    return None
                if int(status.Status) in (0xFF00, 0xFF01) and identifier is not None:
                    found = found or str(identifier.get("SOPInstanceUID", "")) == str(header.SOPInstanceUID)
                elif int(status.Status) != 0x0000:
                    return None
        return found

    def release(self) -> None:
        with _quiet_pynetdicom():
            if self.assoc.is_established:
                self.assoc.release()


def check_destination(dest: Destination, sop_classes: Sequence[str], calling_ae: str = DEFAULT_CALLING_AE,
                      timeout: float = DEFAULT_TIMEOUT_S) -> None:
    """Open and release an association that stores `sop_classes`: SendError (one line) when the archive cannot
    be reached, refuses us, or does not accept them."""
    _Association(dest, sop_classes, calling_ae, timeout).release()
    log.info("DICOM archive %s accepts the association (calling AE title %s)", dest, calling_ae)


def send_files(dest: Destination, files: Sequence[Path], calling_ae: str = DEFAULT_CALLING_AE,
               timeout: float = DEFAULT_TIMEOUT_S) -> SendReport:
    """Store `files` over one association, then look each one up; never raises for the archive's answers: the
    report says what arrived (an association that cannot be opened leaves every file `not sent`)."""
    files = [Path(f) for f in files]
    headers = {f: _read_header(f) for f in files}
    report = SendReport(dest, {f: "not sent" for f in files})
    try:
        assoc = _Association(dest, [str(h.SOPClassUID) for h in headers.values()], calling_ae, timeout)
    except SendError as e:
        report.reasons = {f: str(e).split(": ", 1)[-1] for f in files}
        return report
    try:
        for f in files:
            report.outcome[f], report.reasons[f] = assoc.store(f)
            if report.outcome[f] == "not sent":
                break
        for f in files:
            if report.outcome[f] == "stored" and assoc.can_find:
                found = assoc.find(headers[f])
                if found is not None:
                    report.outcome[f] = "arrived" if found else "missing"
                    if not found:
                        report.reasons[f] = "the archive answered success but does not have it"
        for f in files:
            if report.outcome[f] == "not sent" and f not in report.reasons:
                report.reasons[f] = "association lost before it"
    finally:
        assoc.release()
    return report
