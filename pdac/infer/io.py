"""Reading scans, naming cases, and writing outputs atomically."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from pdac.errors import InputError, OutputError

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd")
CHANNEL_SUFFIX = "_0000"
# Resource guard: the largest PANORAMA scan is about 512 x 512 x 2900 voxels (1.3 m at 0.45 mm slices);
# the pipeline holds a few float32 copies of the scan, so 1e9 voxels needs roughly 12-16 GB of memory.
MAX_VOXELS = 1_000_000_000


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
            found.extend(sorted(f for f in p.iterdir() if f.is_file() and image_suffix(f)))
        elif p.exists():
            found.append(p)
        else:
            raise InputError(f"{p}: no such file or folder")
    return found


def read_image(path: Path, dtype=sitk.sitkFloat32) -> sitk.Image:
    """Read a 3D scalar image; refuse anything else with one clear line.

    The header is checked before the pixels are read, so an absurdly large image is refused
    without allocating it."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: not a file")
    if not image_suffix(path):
        raise InputError(f"{path.name}: unsupported file type (expected {', '.join(IMAGE_SUFFIXES)})")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        size = reader.GetSize()
        if reader.GetNumberOfComponents() != 1:
            raise InputError(f"{path.name}: vector/multi-channel pixels are not supported (need a scalar CT)")
        if len(size) == 4 and size[3] == 1:
            size = size[:3]
        if len(size) != 3:
            raise InputError(f"{path.name}: expected a 3D image, got {len(size)}D")
        if int(np.prod(size, dtype=np.int64)) > MAX_VOXELS:
            raise InputError(f"{path.name}: {'x'.join(map(str, size))} voxels exceeds the limit of "
                             f"{MAX_VOXELS:,} voxels")
        image = reader.Execute()
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
        detail = lines[-1][:160] if lines else "unreadable"
        raise InputError(f"{path.name}: cannot read image ({detail})") from None
    if image.GetDimension() == 4:
        image = image[:, :, :, 0]
    if min(image.GetSpacing()) <= 0 or not np.all(np.isfinite(image.GetSpacing())):
        raise InputError(f"{path.name}: invalid voxel spacing {image.GetSpacing()}")
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


def _atomic(path: Path, write) -> None:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part" + "".join(path.suffixes),
                                   dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise OutputError(f"cannot write to {path.parent}: {e.strerror or e}") from None
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError | RuntimeError):
            raise OutputError(f"cannot write {path}: {e}") from None
        raise


def write_image_atomic(image: sitk.Image, path: Path, compress: bool = True) -> None:
    def write(tmp):
        # SimpleITK picks the writer from the extension; write to a temp file with the same extension.
        sitk.WriteImage(image, tmp, useCompression=compress)

    _atomic(path, write)


def write_json_atomic(data, path: Path) -> None:
    _atomic(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2) + "\n"))


def write_text_atomic(text: str, path: Path) -> None:
    _atomic(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
