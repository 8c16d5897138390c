"""nnU-Net trainer variants of this project.

nnU-Net finds them by name when `nnUNet_extTrainer` points at this folder (see `trainers_path()`);
nothing is copied into nnU-Net's source tree.
"""

from pathlib import Path


def trainers_path() -> str:
    return str(Path(__file__).resolve().parent)
