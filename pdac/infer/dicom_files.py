"""One DICOM file's header, read with pydicom before any pixel is touched.

Folder scanning is ours, not GDCM's: GDCM's folder scan stops at a FIFO (a series silently loses its last
slices) and lets a file declaring a huge matrix allocate it before anything is checked. Here each file is
opened only if it is a regular file, its header read with large values deferred (nothing big is loaded),
and its pixel data's extent checked against what the header declares (Rows x Columns x frames for native
pixel data; complete fragment items up to the sequence delimiter for compressed pixel data), so a truncated
or forged file is refused by name before SimpleITK reads the series.
"""

from __future__ import annotations

import os
import stat
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.encaps import parse_fragments
from pydicom.errors import InvalidDicomError

PIXEL_DATA = 0x7FE00010
ITEM_TAG, DELIMITER_TAG = b"\xfe\xff\x00\xe0", b"\xfe\xff\xdd\xe0"  # (FFFE,E000), (FFFE,E0DD), little endian
MAX_PLANE = 8192  # rows or columns: CT slices are 512-1024; larger is a forged or non-CT header
# Tags kept for grouping and log lines, under SimpleITK's "gggg|eeee" names used across pdac.infer.dicom.
TAGS = {"0008|0008": "ImageType", "0008|0016": "SOPClassUID", "0008|0060": "Modality",
        "0008|103e": "SeriesDescription", "0020|0011": "SeriesNumber"}


class Unreadable(Exception):
    """The file exists but cannot be opened or read (permissions, a dangling link, an I/O error)."""


@dataclass(frozen=True)
class Header:
    path: Path
    series_uid: str
    origin: np.ndarray
    direction: np.ndarray  # 3x3, columns = row direction, column direction, slice normal
    size: tuple[int, int, int]  # columns, rows, frames
    tags: dict[str, str] = field(default_factory=dict)
    problem: str | None = None  # why this file cannot be part of a volume

    def tag(self, key: str) -> str:
        return self.tags.get(key, "").strip()


def special_file(path: Path) -> str | None:
    """'FIFO', 'socket', ... for anything that is not a regular file (links followed), else None."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise Unreadable(e.strerror or str(e)) from None
    if stat.S_ISREG(mode):
        return None
    kinds = {stat.S_ISFIFO: "FIFO", stat.S_ISSOCK: "socket", stat.S_ISCHR: "character device",
             stat.S_ISBLK: "block device", stat.S_ISDIR: "folder"}
    return next((name for test, name in kinds.items() if test(mode)), "special file")


def _text(ds, keyword: str) -> str:
    value = ds.get(keyword, "")
    return "\\".join(map(str, value)) if isinstance(value, pydicom.multival.MultiValue) else str(value)


def _floats(ds, keyword: str, n: int) -> np.ndarray | None:
    try:
        values = np.array([float(v) for v in ds.get(keyword) or ()], dtype=float)
    except (TypeError, ValueError):
        return None
    return values if values.shape == (n,) and np.all(np.isfinite(values)) else None


def read_header(path: Path) -> Header | None:
    """The header of an image file, or None for a file that is not DICOM or holds no pixel data (SR, KO, ...).

    Raises Unreadable when the file cannot be read at all."""
    try:
        with open(path, "rb") as fp:
            size = os.fstat(fp.fileno()).st_size
            try:
                with warnings.catch_warnings(record=True) as caught:  # values are converted lazily: inside too
                    warnings.simplefilter("always")
                    ds = pydicom.dcmread(fp, defer_size=1024, force=_acr_nema(fp))
                    if any("end of file" in str(w.message).lower() for w in caught):
                        raise Unreadable("truncated DICOM file (it ends inside an element)")
                    if PIXEL_DATA not in ds:
                        return _without_pixels(ds)
                    return _header(path, ds, fp, size)
            except InvalidDicomError:
                return None
            except (Unreadable, OSError):
                raise
            except Exception as e:  # noqa: BLE001 - any parser error on a damaged header (pydicom raises many kinds)
                raise Unreadable(f"damaged DICOM file ({type(e).__name__})") from None
    except OSError as e:
        raise Unreadable(e.strerror or str(e)) from None


def _without_pixels(ds) -> None:
    """None for a DICOM object that carries no scan (SR, KO, DICOMDIR, ...); an image whose pixel data is
    missing, or a file without a dataset, is a truncated file."""
    meta = getattr(ds, "file_meta", None) or {}
    sop = pydicom.uid.UID(str(ds.get("SOPClassUID") or meta.get("MediaStorageSOPClassUID") or ""))
    if "Image Storage" in sop.name:
        raise Unreadable(f"{sop.name} without pixel data: truncated file")
    if len(ds) == 0:
        raise Unreadable("DICOM file without a dataset: truncated file")
    return None


def _acr_nema(fp) -> bool:
    """Files without the 'DICM' preamble are read only if they start like a DICOM dataset (group 0008).
    An empty file, or one that ends inside the zero preamble, is a slice cut short, not some other file."""
    start = fp.read(132)
    fp.seek(0)
    if len(start) < 132 and not any(start[:128]) and b"DICM".startswith(start[128:]):
        raise Unreadable("empty file or truncated DICOM preamble (a slice cut short?)")
    return start[128:132] != b"DICM" and start[:2] == b"\x08\x00"


def _broken(path: Path, problem: str, uid: str = "", tags: dict | None = None) -> Header:
    return Header(path, uid, np.zeros(3), np.eye(3), (0, 0, 0), tags or {}, problem)


def _header(path: Path, ds, fp, file_size: int) -> Header:
    uid = str(ds.get("SeriesInstanceUID", "") or "")
    try:
        tags = {key: _text(ds, keyword) for key, keyword in TAGS.items() if keyword in ds}
        rows, columns = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
        frames = int(ds.get("NumberOfFrames") or 1)
    except (TypeError, ValueError, OverflowError) as e:
        return _broken(path, f"unreadable image header ({e})", uid)
    if not (0 < rows <= MAX_PLANE and 0 < columns <= MAX_PLANE and 0 < frames):
        return _broken(path, f"declares a {columns} x {rows} x {frames} matrix (at most {MAX_PLANE} x {MAX_PLANE} "
                       "per slice)", uid, tags)
    problem = _pixel_data_problem(ds, fp, file_size, rows * columns * frames)
    orientation = _floats(ds, "ImageOrientationPatient", 6)
    origin = _floats(ds, "ImagePositionPatient", 3)
    if problem is None and (orientation is None or origin is None):
        problem = "no valid Image Position / Orientation (Patient)"
    if problem:
        return _broken(path, problem, uid, tags)
    row, col = orientation[:3], orientation[3:]
    direction = np.column_stack([row, col, np.cross(row, col)])
    return Header(path, uid, origin, direction, (columns, rows, frames), tags)


def _pixel_data_problem(ds, fp, file_size: int, voxels: int) -> str | None:
    """Whether the pixel data holds what the header declares, checked from element lengths (nothing read)."""
    raw = ds.get_item(PIXEL_DATA, keep_deferred=True)
    start = getattr(raw, "value_tell", None)
    if start is None:
        return "pixel data not where the header says"
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    encapsulated = bool(syntax is not None and syntax.is_encapsulated)
    if not encapsulated:
        try:
            bits, samples = int(ds.get("BitsAllocated") or 16), int(ds.get("SamplesPerPixel") or 1)
        except (TypeError, ValueError):
            return "unreadable Bits Allocated / Samples per Pixel"
        need = (voxels * samples * bits + 7) // 8
        have = min(raw.length, file_size - start) if raw.length != 0xFFFFFFFF else file_size - start
        if have < need:
            return f"pixel data of {have:,} bytes, the header declares {need:,}: truncated file"
        return None
    return _fragments_problem(fp, start, file_size, int(ds.get("NumberOfFrames") or 1))


def _fragments_problem(fp, start: int, file_size: int, frames: int) -> str | None:
    """Compressed pixel data: the offset-table item, then fragment items that end inside the file, then the
    sequence delimiter; at least one fragment per frame."""
    fp.seek(start)
    head = fp.read(8)
    if len(head) < 8 or head[:4] != ITEM_TAG:
        return "compressed pixel data without its offset table: truncated file"
    table = struct.unpack("<L", head[4:])[0]
    if start + 8 + table > file_size:
        return "compressed pixel data ends inside its offset table: truncated file"
    fp.seek(start + 8 + table)
    try:
        count, offsets = parse_fragments(fp)
    except ValueError as e:
        return f"compressed pixel data damaged ({e})"
    end = start + 8 + table
    if offsets:
        fp.seek(offsets[-1] + 4)
        end = offsets[-1] + 8 + struct.unpack("<L", fp.read(4))[0]
    fp.seek(end)
    if end + 4 > file_size or fp.read(4) != DELIMITER_TAG:
        return "compressed pixel data ends before its last fragment: truncated file"
    if count < frames:
        return f"compressed pixel data holds {count} fragment(s) for {frames} frame(s): truncated file"
    return None
