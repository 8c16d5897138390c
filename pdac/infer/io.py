"""Reading scans, naming cases, and writing outputs atomically."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from pdac.errors import InputError, OutputError
from pdac.infer.geometry import check_geometry
from pdac.infer.metaimage import check_metaimage

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd")
CHANNEL_SUFFIX = "_0000"
# Resource guard: the largest PANORAMA scan is about 512 x 512 x 2900 voxels (1.3 m at 0.45 mm slices);
# the pipeline holds a few float32 copies of the scan, so 1e9 voxels needs roughly 12-16 GB of memory.
MAX_VOXELS = 1_000_000_000
SCALAR_PIXEL_TYPES = {sitk.sitkUInt8, sitk.sitkInt8, sitk.sitkUInt16, sitk.sitkInt16, sitk.sitkUInt32, sitk.sitkInt32,
                      sitk.sitkUInt64, sitk.sitkInt64, sitk.sitkFloat32, sitk.sitkFloat64}


def shown(path: Path | str) -> str:
    """A path as it can be printed and logged, whatever bytes its name holds (undecodable bytes as \\xNN)."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


def utf8_name(path: Path) -> bool:
    """Whether the path is valid UTF-8 (SimpleITK's native code aborts the process on one that is not)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def image_suffix(path: Path) -> str | None:
    name = path.name.lower()
    return next((s for s in IMAGE_SUFFIXES if name.endswith(s)), None)


def case_id(path: Path, strip_channel: bool = True) -> str:
    """File name without its image extension and (for scans) without a trailing nnU-Net channel suffix."""
    path = Path(path)
    suffix = image_suffix(path)
    stem = path.name[: -len(suffix)] if suffix else path.stem
    return stem[: -len(CHANNEL_SUFFIX)] if strip_channel and stem.endswith(CHANNEL_SUFFIX) else stem


def find_images(paths: Iterable[Path]) -> list[Path]:
    """Image files among `paths`, expanding folders (non-recursive); other files are ignored."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            try:
                found.extend(sorted(f for f in p.iterdir() if f.is_file() and image_suffix(f)))
            except OSError as e:
                raise InputError(f"{shown(p)}: cannot list the input folder ({e.strerror or e})") from None
        elif p.exists():
            found.append(p)
        else:
            raise InputError(f"{shown(p)}: no such file or folder")
    return found


def read_image(path: Path, dtype=sitk.sitkFloat32) -> sitk.Image:
    """Read a 3D scalar image; refuse anything else with one clear line.

    The header is checked before the pixels are read, so an absurdly large image is refused
    without allocating it."""
    path = Path(path)
    name = shown(path.name)
    if not utf8_name(path):
        raise InputError(f"{name}: file name is not valid UTF-8 (rename it)")
    if not path.is_file():
        raise InputError(f"{shown(path)}: not a file")
    if not image_suffix(path):
        raise InputError(f"{name}: unsupported file type (expected {', '.join(IMAGE_SUFFIXES)})")
    if image_suffix(path) in (".mha", ".mhd"):
        check_metaimage(path, MAX_VOXELS)  # data location, element type, compressed data: before SimpleITK
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        size = reader.GetSize()
        if reader.GetNumberOfComponents() != 1:
            raise InputError(f"{name}: vector/multi-channel pixels are not supported (need a scalar CT)")
        if len(size) == 4 and size[3] == 1:
            size = size[:3]
        if len(size) != 3:
            raise InputError(f"{name}: expected a 3D image, got {len(size)}D")
        if int(np.prod(size, dtype=np.int64)) > MAX_VOXELS:
            raise InputError(f"{name}: {'x'.join(map(str, size))} voxels exceeds the limit of "
                             f"{MAX_VOXELS:,} voxels")
        image = reader.Execute()
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
        detail = lines[-1][:160] if lines else "unreadable"
        raise InputError(f"{name}: cannot read image ({detail})") from None
    if image.GetNumberOfComponentsPerPixel() != 1 or image.GetPixelID() not in SCALAR_PIXEL_TYPES:
        raise InputError(f"{name}: unsupported pixel type {image.GetPixelIDTypeAsString()} (need a numeric scalar)")
    if image.GetDimension() == 4:
        image = image[:, :, :, 0]
    check_geometry(image, name, InputError)  # finite, sane origin, positive spacing, orthonormal direction
    return sitk.Cast(image, dtype) if dtype is not None and image.GetPixelID() != dtype else image


_UMASK = os.umask(0)
os.umask(_UMASK)


def ensure_writable_dir(out: Path) -> None:
    """Create `out` if needed and check that files can be created in it (before any long work)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".pdac-write-test.", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputError(f"output folder {out} is not writable: {e.strerror or e}") from None


@contextlib.contextmanager
def _signals_deferred():
    """Hold SIGTERM/SIGINT for a few statements of bookkeeping, so an interrupt cannot fall between
    creating or renaming a file and recording it for clean-up."""
    held = {signal.SIGTERM, signal.SIGINT}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _temporary_affixes(target: Path) -> tuple[str, str]:
    """mkstemp's prefix and suffix for a temporary beside `target`: hidden, same format-deciding extension
    (.nii.gz, .mha, ...), and never longer than the folder's name limit when the target itself fits (the
    target's name is shortened in the temporary's, not the other way round)."""
    name = target.name
    extension = ".nii.gz" if name.lower().endswith(".nii.gz") else target.suffix
    try:
        limit = os.pathconf(target.parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    suffix = ".part" + extension
    room = limit - len(suffix.encode()) - 2 - 8  # '.' before, '.' after, mkstemp's 8 random characters
    stem = name.encode()[:max(room, 0)].decode(errors="ignore")
    return f".{stem}.", suffix


def write_files_atomic(writers: list[tuple[Path, Callable[[str], None]]], final: bool = False) -> None:
    """Write a set of files all or nothing: each `write(temporary_path)` writes a temporary beside its
    target (same extension, so writers that choose the format by it work), then the temporaries are renamed
    in the given order. On any failure or interrupt the temporaries and the files of the set already
    renamed are removed.

    `final`: these are the process's last outputs (process.py). Termination signals are ignored from the
    last rename on, inside the same signal-blocked step: the outputs are complete, the process only has to
    exit 0, and a late SIGTERM must neither remove them nor report them removed."""
    temporaries: list[Path] = []
    renamed: list[Path] = []
    current = writers[0][0] if writers else Path()
    try:
        for path, write in writers:
            current = Path(path)
            try:
                current.parent.mkdir(parents=True, exist_ok=True)
                with _signals_deferred():
                    prefix, suffix = _temporary_affixes(current)
                    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=current.parent)
                    temporaries.append(Path(tmp))
                os.close(fd)
            except OSError as e:
                raise OutputError(f"cannot write to {current.parent}: {e.strerror or e}") from None
            write(tmp)
            os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
        for i, ((path, _), tmp) in enumerate(zip(writers, temporaries, strict=True)):
            current = Path(path)
            with _signals_deferred():  # a signal cannot fall between the rename and its record
                os.replace(tmp, current)
                renamed.append(current)
                if final and i == len(writers) - 1:
                    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a held signal is then discarded
                    signal.signal(signal.SIGINT, signal.SIG_IGN)
    except BaseException as e:
        with _signals_deferred():
            for leftover in temporaries + renamed:
                with contextlib.suppress(OSError):
                    leftover.unlink(missing_ok=True)
        if isinstance(e, OSError | RuntimeError):
            raise OutputError(f"cannot write {current}: {e}") from None
        raise


def _atomic(path: Path, write) -> None:
    write_files_atomic([(Path(path), write)])


def image_writer(image: sitk.Image, compress: bool = True) -> Callable[[str], None]:
    # SimpleITK picks the writer from the extension; the temporary keeps it.
    return lambda tmp: sitk.WriteImage(image, tmp, useCompression=compress)


def json_writer(data) -> Callable[[str], None]:
    return lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2) + "\n")


def write_image_atomic(image: sitk.Image, path: Path, compress: bool = True) -> None:
    _atomic(path, image_writer(image, compress))


def write_json_atomic(data, path: Path) -> None:
    _atomic(path, json_writer(data))


@contextlib.contextmanager
def locked(path: Path):
    """An exclusive lock between processes (fcntl.flock on `path`, created and removed here). The lock file
    is removed while still held; a waiter that then finds another file at `path` starts again."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise OutputError(f"cannot create lock file {path}: {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


def merge_json_object(path: Path, entries: dict) -> dict:
    """Add `entries` to the JSON object in `path` (created if missing), read-modify-write under a lock, so
    that processes merging into one file concurrently never drop each other's entries. Returns the result."""
    path = Path(path)
    with locked(path.parent / f".{path.name}.lock"):
        merged = {}
        if path.exists() or path.is_symlink():
            from pdac.safe_read import read_json

            try:
                merged = read_json(path, OutputError)  # a FIFO is refused, not waited on
            except OutputError as e:
                raise OutputError(f"cannot merge into it ({e}); move it away") from None
            if not isinstance(merged, dict):
                raise OutputError(f"{path}: cannot merge into it (not a JSON object); move it away")
        merged.update(entries)
        write_json_atomic(merged, path)
    return merged


def write_text_atomic(text: str, path: Path) -> None:
    _atomic(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
