"""Checks on MetaImage files (.mha/.mhd) before SimpleITK reads anything from them.

SimpleITK follows a header's `ElementDataFile` anywhere (an absolute path, `../`, a FIFO that blocks the
run forever) and can partly inflate damaged zlib data without raising. So the text header is parsed
here: the pixel data must be `LOCAL` or a regular file beside the header, the element type numeric and
scalar, and compressed data must inflate completely to exactly the size the header announces (inflated
in bounded steps and thrown away, so a zip bomb costs time, not memory).
"""

from __future__ import annotations

import os
import stat
import zlib
from dataclasses import dataclass
from pathlib import Path

from pdac.errors import InputError

MAX_HEADER_BYTES = 1 << 20
ELEMENT_SIZES = {  # MetaIO's numeric scalar types and their sizes in bytes
    "MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
    "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8,
}
LOCAL_NAMES = ("LOCAL", "Local", "local")  # what MetaIO reads as "the data follows the header"
_CHUNK = 1 << 16


@dataclass(frozen=True)
class Header:
    fields: dict[str, str]  # keys upper-cased
    data_offset: int  # bytes of header text, up to and including the ElementDataFile line


def _open_regular(path: Path):
    """Open for reading only if it is a regular file (a FIFO would block the run)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{path.name} is not a regular file")
    return os.fdopen(fd, "rb")


def parse_header(path: Path) -> Header | None:
    """The `key = value` lines up to ElementDataFile; None when the file does not look like a MetaImage
    header at all (then SimpleITK reports what it makes of it)."""
    with _open_regular(path) as f:
        head = f.read(MAX_HEADER_BYTES)
    fields: dict[str, str] = {}
    offset = 0
    for raw in head.splitlines(keepends=True):
        offset += len(raw)
        key, sep, value = raw.decode("latin-1").partition("=")
        if not sep:
            continue
        key = key.strip().upper()
        fields[key] = value.strip()
        if key == "ELEMENTDATAFILE":
            if raw.endswith((b"\n", b"\r")) or offset < len(head) or len(head) < MAX_HEADER_BYTES:
                return Header(fields, offset)
            break
    if {"NDIMS", "DIMSIZE", "OBJECTTYPE", "ELEMENTTYPE"} & set(fields):
        raise _refuse(path, "cannot read image (no complete ElementDataFile line in the first "
                            f"{MAX_HEADER_BYTES:,} bytes of the header)")
    return None


def _refuse(path: Path, reason: str) -> InputError:
    return InputError(f"{path.name}: {reason}")


def data_file(path: Path, header: Header) -> tuple[Path, int]:
    """(file holding the pixel data, offset of the data in it). Only LOCAL data or a regular file in the
    header's own folder; anything else is refused before it is opened."""
    value = header.fields["ELEMENTDATAFILE"]
    if value in LOCAL_NAMES:
        return path, header.data_offset
    if value.upper().startswith("LIST") or "%" in value or len(value.split()) != 1:
        raise _refuse(path, f"ElementDataFile {value!r}: file lists and patterns are not supported "
                            "(need LOCAL or one data file beside the header)")
    if "/" in value or "\\" in value or value in (".", "..") or os.path.isabs(value):
        raise _refuse(path, f"ElementDataFile {value!r} points outside the scan's folder "
                            "(need LOCAL or a file name in the same folder)")
    folder = Path(os.path.realpath(path.parent))
    target = Path(os.path.realpath(folder / value))
    if target.parent != folder:
        raise _refuse(path, f"ElementDataFile {value!r} is a link out of the scan's folder (-> {target})")
    try:
        mode = os.stat(target).st_mode
    except OSError as e:
        raise _refuse(path, f"cannot read image (data file {value}: {e.strerror or e})") from None
    if not stat.S_ISREG(mode):
        raise _refuse(path, f"ElementDataFile {value!r} is not a regular file")
    try:
        header_size = int(header.fields.get("HEADERSIZE", "0"))
    except ValueError:
        raise _refuse(path, "cannot read image (HeaderSize is not an integer)") from None
    if header_size < 0:
        raise _refuse(path, "HeaderSize = -1 (data at the end of the file) is not supported")
    return target, header_size


def _expected_bytes(fields: dict[str, str]) -> int | None:
    try:
        ndims = int(fields["NDIMS"])
        dims = [int(v) for v in fields["DIMSIZE"].split()]
        channels = int(fields.get("ELEMENTNUMBEROFCHANNELS", "1"))
    except (KeyError, ValueError):
        return None
    if len(dims) != ndims or min(dims, default=0) < 1 or channels < 1:
        return None
    count = channels
    for d in dims:
        count *= d
    return count * ELEMENT_SIZES[fields["ELEMENTTYPE"]]


def _inflated_size(f, compressed_size: int | None, limit: int) -> int:
    """Bytes a zlib/gzip stream inflates to, counted up to just past `limit`; raises on corrupt or
    incomplete data."""
    inflater = zlib.decompressobj(47)  # zlib or gzip header, as MetaIO accepts
    total, left = 0, compressed_size
    while not inflater.eof:
        chunk = f.read(_CHUNK if left is None else min(_CHUNK, left))
        if not chunk:
            break
        if left is not None:
            left -= len(chunk)
        while chunk and not inflater.eof:
            total += len(inflater.decompress(chunk, _CHUNK))
            if total > limit:
                return total
            chunk = inflater.unconsumed_tail
    total += len(inflater.flush())
    if not inflater.eof:
        raise zlib.error("the compressed stream ends early")
    return total


def check_metaimage(path: Path, max_voxels: int) -> None:
    """Refuse (InputError) a MetaImage whose data lies outside its folder, whose element type is not a
    numeric scalar, or whose compressed data does not inflate to exactly the announced size."""
    path = Path(path)
    try:
        header = parse_header(path)
    except OSError as e:
        raise _refuse(path, f"cannot read image ({e.strerror or e})") from None
    if header is None:
        return
    fields = header.fields
    element = fields.get("ELEMENTTYPE", "")
    if element not in ELEMENT_SIZES:
        raise _refuse(path, f"unsupported element type {element or '(none)'} (need a numeric scalar type)")
    source, offset = data_file(path, header)
    expected = _expected_bytes(fields)
    if expected is None or expected // ELEMENT_SIZES[element] > max_voxels:
        return  # SimpleITK's header reading and the voxel limit refuse it next
    if fields.get("BINARYDATA", "True").lower() == "false":
        return  # ASCII pixel data: SimpleITK parses every value itself
    compressed = fields.get("COMPRESSEDDATA", "False").lower() == "true"
    try:
        available = os.stat(source).st_size - offset
        if not compressed:
            if available < expected:
                raise _refuse(path, f"cannot read image (pixel data truncated: {max(available, 0):,} of "
                                    f"{expected:,} bytes)")
            return
        compressed_size = None
        if "COMPRESSEDDATASIZE" in fields:
            try:
                compressed_size = int(fields["COMPRESSEDDATASIZE"])
            except ValueError:
                raise _refuse(path, "cannot read image (CompressedDataSize is not an integer)") from None
            if compressed_size < 0 or compressed_size > available:
                raise _refuse(path, f"cannot read image (compressed pixel data truncated: {max(available, 0):,} "
                                    f"of {compressed_size:,} bytes)")
        with _open_regular(source) as f:
            f.seek(offset)
            inflated = _inflated_size(f, compressed_size, expected)
    except zlib.error as e:
        raise _refuse(path, f"cannot read image (corrupt compressed pixel data: {e})") from None
    except OSError as e:
        raise _refuse(path, f"cannot read image ({e.strerror or e})") from None
    if inflated != expected:
        more = "more than" if inflated > expected else f"{inflated:,} bytes, not"
        raise _refuse(path, f"cannot read image (corrupt compressed pixel data: inflates to {more} the "
                            f"{expected:,} bytes its header announces)")
