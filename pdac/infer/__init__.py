"""The product: one scan in, detection map and likelihood out (what the GC container runs).

pipeline -> pancreas (stage 1) -> geometry (crop) -> lesion (stage 2) -> candidates (post-processing);
models and weights load nnU-Net folders; io reads scans and writes outputs; batch is `pdac detect`.
"""
