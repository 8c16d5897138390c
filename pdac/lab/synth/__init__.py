"""Synthetic CT painted from real patients' label maps (SynthSeg-style), with PDAC transplanted from PANORAMA maps.

`sources` reads the label maps, `lesions` moves hand-drawn tumours between glands, `paint` turns tissues into
CT-like intensities and a scanner geometry, `dataset` writes nnU-Net-ready case folders."""
