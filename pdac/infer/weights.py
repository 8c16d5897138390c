"""Finding model weights and checking them against their SHA-256 manifest before anything is unpickled.

nnU-Net checkpoints are pickles: loading one runs code it contains. The manifest makes a swapped or
corrupted file fail loudly instead; only load weights whose manifest you trust.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from pdac.config import REPO_ROOT
from pdac.errors import WeightsError

MANIFEST = "manifest.json"
GC_MODEL_DIR = Path("/opt/ml/model")
HASHED_SUFFIXES = (".pth", ".json", ".pkl")


def resolve_weights_dir(cli_value: str | os.PathLike | None = None) -> Path:
    """`--weights`, then $PDAC_WEIGHTS, then /opt/ml/model (when not empty), then the repo's weights/."""
    if cli_value:
        return Path(cli_value)
    if os.environ.get("PDAC_WEIGHTS"):
        return Path(os.environ["PDAC_WEIGHTS"])
    try:
        if GC_MODEL_DIR.is_dir() and any(GC_MODEL_DIR.iterdir()):
            return GC_MODEL_DIR
    except OSError:
        pass
    return REPO_ROOT / "weights"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _tracked_files(weights_dir: Path) -> list[Path]:
    return sorted(p for p in weights_dir.rglob("*")
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


def verify_weights(weights_dir: Path, needed: list[Path] | None = None) -> None:
    """Check the manifest: every listed file exists with its checksum, and every checkpoint present is
    listed. `needed` (relative paths) must all be listed. Raises WeightsError naming the file."""
    weights_dir = Path(weights_dir)
    if not weights_dir.is_dir():
        raise WeightsError(f"weights folder not found: {weights_dir}")
    manifest_path = weights_dir / MANIFEST
    if not manifest_path.is_file():
        raise WeightsError(f"{manifest_path}: missing checksum manifest (create it with `pdac weights-manifest`)")
    try:
        files = json.loads(manifest_path.read_text())["files"]
    except (ValueError, KeyError, TypeError):
        raise WeightsError(f"{manifest_path}: not a valid manifest") from None
    for rel, digest in files.items():
        path = weights_dir / rel
        if not path.is_file():
            raise WeightsError(f"weights file missing: {path}")
        if sha256(path) != digest:
            raise WeightsError(f"weights file corrupt or modified (checksum mismatch): {path}")
    for path in weights_dir.rglob("*.pth"):
        if path.relative_to(weights_dir).as_posix() not in files:
            raise WeightsError(f"checkpoint not in the manifest, refusing to load it: {path}")
    for rel in needed or []:
        if Path(rel).as_posix() not in files:
            raise WeightsError(f"weights file missing: {weights_dir / rel}")
