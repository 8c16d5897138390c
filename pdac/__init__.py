"""PDAC detection in contrast-enhanced CT with a two-stage nnU-Net pipeline (PANORAMA interface)."""

__version__ = "0.1.0"
