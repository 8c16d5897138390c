"""Finding model weights and checking them against their SHA-256 manifest before anything is unpickled.

nnU-Net checkpoints are pickles: loading one runs code it contains. The manifest makes a swapped or
corrupted file fail loudly instead; only load weights whose manifest you trust.

Hash what you load, load what you hashed: `verify_weights` walks the whole folder (refusing symlinks
that leave it and folders it cannot list), checks every manifest entry by its resolved real path and
returns those paths with their digests (`VerifiedWeights`). The model loader opens nothing else: it
reads a file's bytes once through `VerifiedWeights.read`, which hashes exactly those bytes again and
refuses them if they differ from the manifest, and unpickles from the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pdac.config import REPO_ROOT
from pdac.errors import WeightsError
from pdac.safe_read import check_depth, loads_json, walk

MANIFEST = "manifest.json"
# GC mounts an uploaded model tarball here. PDAC_GC_MODEL_DIR moves it: a test hook only (tests cannot
# write /opt/ml), never needed in use.
GC_MODEL_DIR_ENV = "PDAC_GC_MODEL_DIR"
HASHED_SUFFIXES = (".pth", ".json", ".pkl")
_DIGEST = re.compile(r"[0-9a-fA-F]{64}")


def gc_model_dir() -> Path:
    return Path(os.environ.get(GC_MODEL_DIR_ENV) or "/opt/ml/model")


def find_weights_dir(cli_value: str | os.PathLike | None = None) -> tuple[Path, str]:
    """(weights folder, why it was chosen): `--weights`, then $PDAC_WEIGHTS, then GC's /opt/ml/model
    when it holds anything, then the repository's demo weights. A /opt/ml/model that is there but cannot
    be listed is a WeightsError, never a silent fall-back to the demo weights."""
    if cli_value:
        return Path(cli_value), "--weights"
    if os.environ.get("PDAC_WEIGHTS"):
        return Path(os.environ["PDAC_WEIGHTS"]), "$PDAC_WEIGHTS"
    gc_dir = gc_model_dir()
    if os.path.lexists(gc_dir):
        try:
            if not gc_dir.is_dir():
                raise WeightsError(f"{gc_dir}: GC model mount is not a folder; refusing to fall back to the "
                                   "bundled demo weights")
            with os.scandir(gc_dir) as entries:
                has_files = any(True for _ in entries)
        except OSError as e:
            raise WeightsError(f"{gc_dir}: GC model mount is present but unreadable ({e.strerror or e}); "
                               "refusing to fall back to the bundled demo weights") from None
        if has_files:
            return gc_dir, "GC model mount"
        return REPO_ROOT / "weights", f"bundled demo weights: {gc_dir} is empty"
    return REPO_ROOT / "weights", "bundled demo weights: no --weights, $PDAC_WEIGHTS or GC model mount"


def resolve_weights_dir(cli_value: str | os.PathLike | None = None) -> Path:
    """The folder `find_weights_dir` chooses."""
    return find_weights_dir(cli_value)[0]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _tracked_files(weights_dir: Path) -> list[Path]:
    return sorted(p for p in (Path(d) / f for d, _, files in walk(weights_dir, WeightsError) for f in files)
                  if p.is_file() and p.name != MANIFEST and p.name.endswith(HASHED_SUFFIXES))


def write_manifest(weights_dir: Path) -> dict:
    """(Re)generate the manifest after weights were changed on purpose."""
    weights_dir = Path(weights_dir)
    files = {p.relative_to(weights_dir).as_posix(): sha256(p) for p in _tracked_files(weights_dir)}
    if not any(name.endswith(".pth") for name in files):
        raise WeightsError(f"{weights_dir}: no checkpoint (*.pth) to put in a manifest")
    manifest = {"algorithm": "sha256", "files": files}
    (weights_dir / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def is_plain_relative(name: str) -> bool:
    """A relative POSIX path without '..', '.', empty parts, backslashes or NUL: it cannot leave its folder."""
    if not name or name.startswith("/") or "\\" in name or "\0" in name:
        return False
    return all(part not in ("", ".", "..") for part in name.split("/"))


def is_plain_name(name: str) -> bool:
    """A single file or folder name (no separators, not '.' or '..')."""
    return is_plain_relative(name) and "/" not in name


@dataclass(frozen=True)
class VerifiedFile:
    path: Path  # resolved real path, inside the resolved weights folder
    sha256: str


@dataclass(frozen=True)
class ModelFiles:
    """One model folder's files as the loader sees them: names relative to the folder, read as bytes."""

    folder: Path  # for messages
    names: frozenset[str]
    read_bytes: Callable[[str], bytes]


@dataclass(frozen=True)
class VerifiedWeights:
    """The files a manifest check resolved and hashed: the only files the model loader may open."""

    folder: Path  # as given (for messages)
    root: Path  # resolved
    files: dict[str, VerifiedFile]  # manifest name -> file

    def read(self, name: str) -> bytes:
        """The bytes of a verified file, read once and hashed again: what is returned is what was hashed."""
        entry = self.files.get(name)
        if entry is None:
            raise WeightsError(f"not in the manifest, refusing to load it: {self.folder / name}")
        data = _read_file(entry.path, self.folder / name)
        if hashlib.sha256(data).hexdigest() != entry.sha256:
            raise WeightsError(f"weights file corrupt or modified (checksum mismatch): {self.folder / name}")
        return data

    def model(self, name: str) -> ModelFiles:
        """The verified files of the model folder `name` (a plain folder name inside the weights folder)."""
        if not is_plain_name(name):
            raise WeightsError(f"model folder must be a folder name inside {self.folder}, got {name!r}")
        prefix = name + "/"
        names = frozenset(n[len(prefix):] for n in self.files if n.startswith(prefix))
        return ModelFiles(self.folder / name, names, lambda rel: self.read(prefix + rel))


def unverified_model_folder(folder: Path) -> ModelFiles:
    """A model folder without a manifest (one's own training output, e.g. for `pdac select-checkpoint`).
    Only for folders you produced yourself: nothing is checked."""
    folder = Path(folder)
    names = []
    for dirpath, _, filenames in walk(folder, WeightsError, onerror=_unlistable(folder, folder)):
        rel_dir = Path(dirpath).relative_to(folder)
        names.extend((rel_dir / f).as_posix() for f in filenames)
    return ModelFiles(folder, frozenset(names), lambda rel: _read_file(folder / rel, folder / rel))


def _open_regular(path: Path, shown: Path):
    """Open a regular file for reading (not a FIFO or device, not a symlink swapped in after resolving)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        raise WeightsError(f"cannot read weights file {shown}: {e.strerror or e}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise WeightsError(f"weights file is not a regular file: {shown}")
    return os.fdopen(fd, "rb")


def _read_file(path: Path, shown: Path) -> bytes:
    with _open_regular(path, shown) as f:
        try:
            return f.read()
        except OSError as e:
            raise WeightsError(f"cannot read weights file {shown}: {e.strerror or e}") from None


def _hash_file(path: Path, shown: Path) -> str:
    h = hashlib.sha256()
    with _open_regular(path, shown) as f:
        try:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        except OSError as e:
            raise WeightsError(f"cannot read weights file {shown}: {e.strerror or e}") from None
    return h.hexdigest()


def _unlistable(folder: Path, root: Path):
    """os.walk's onerror: a folder that cannot be listed could hide an unlisted checkpoint, so refuse."""
    def refuse(e: OSError) -> None:
        where = Path(e.filename) if e.filename else root
        shown = folder / where.relative_to(root) if _inside(where, root) else where
        raise WeightsError(f"cannot list weights folder {shown}: {e.strerror or e}; refusing to load weights "
                           "that cannot all be checked")
    return refuse


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def _scan_folder(folder: Path, root: Path) -> list[str]:
    """Names (relative to `root`) of every regular *.pth file in the folder. Refuses folders that cannot
    be listed and symlinks that leave the folder (checkpoints behind them would escape the manifest)."""
    checkpoints = []
    for dirpath, dirnames, filenames in walk(root, WeightsError, onerror=_unlistable(folder, root)):
        here = Path(dirpath)
        for name in dirnames + filenames:
            entry = here / name
            shown = folder / entry.relative_to(root)
            if entry.is_symlink():
                target = Path(os.path.realpath(entry))
                if not _inside(target, root):
                    raise WeightsError(f"{shown}: symlink leaves the weights folder (-> {target}); refusing it")
            elif name.endswith(".pth") and name in filenames:
                checkpoints.append(entry.relative_to(root).as_posix())
    return checkpoints


def _real_path_inside(root: Path, name: str, shown: Path) -> Path:
    """The real path of `root/name`, which must lie inside `root` (a symlink may not lead out)."""
    real = Path(os.path.realpath(root / name))
    if not _inside(real, root):
        raise WeightsError(f"{shown}: resolves outside the weights folder (-> {real}); refusing it")
    return real


def _read_manifest(folder: Path, root: Path) -> dict[str, str]:
    manifest_path = folder / MANIFEST
    if not os.path.lexists(root / MANIFEST):
        raise WeightsError(f"{manifest_path}: missing checksum manifest (create it with `pdac weights-manifest`)")
    real = _real_path_inside(root, MANIFEST, manifest_path)
    data = _read_file(real, manifest_path)  # an unreadable file is its own one-line error
    check_depth(data, str(manifest_path), WeightsError)  # nested past the limit: say so
    try:
        manifest = loads_json(data, str(manifest_path), WeightsError)
    except WeightsError:
        manifest = None
    try:
        files = manifest["files"]
        algorithm = manifest.get("algorithm", "sha256")
    except (KeyError, TypeError, AttributeError):
        files, algorithm = None, None
    if algorithm != "sha256" or not isinstance(files, dict) or not all(
            isinstance(k, str) and is_plain_relative(k) and isinstance(v, str) and _DIGEST.fullmatch(v)
            for k, v in files.items()):
        raise WeightsError(f"{manifest_path}: not a valid manifest (expected {{\"files\": {{relative path: "
                           "sha256}} with plain relative paths)")
    return {k: v.lower() for k, v in files.items()}


def verify_weights(weights_dir: Path, needed: list[str] | None = None) -> VerifiedWeights:
    """Check the weights folder against its manifest and return the verified files.

    Every listed file must be a regular file whose real path lies inside the folder and whose SHA-256
    matches; every `.pth` present must be listed; every folder must be listable; no symlink may leave
    the folder; `needed` (relative paths) must all be listed. Raises WeightsError naming the file."""
    folder = Path(weights_dir)
    if not folder.is_dir():
        raise WeightsError(f"weights folder not found: {folder}")
    root = Path(os.path.realpath(folder))
    files = _read_manifest(folder, root)
    for name in _scan_folder(folder, root):
        if name not in files:
            raise WeightsError(f"checkpoint not in the manifest, refusing to load it: {folder / name}")
    verified = {}
    for name, digest in sorted(files.items()):
        shown = folder / name
        if not os.path.lexists(root / name):
            raise WeightsError(f"weights file missing: {shown}")
        real = _real_path_inside(root, name, shown)
        if _hash_file(real, shown) != digest:
            raise WeightsError(f"weights file corrupt or modified (checksum mismatch): {shown}")
        verified[name] = VerifiedFile(real, digest)
    for name in needed or []:
        if PurePosixPath(name).as_posix() not in verified:
            raise WeightsError(f"weights file missing: {folder / name}")
    return VerifiedWeights(folder, root, verified)
