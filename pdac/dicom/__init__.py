"""DICOM out: the results of a case as DICOM objects beside its source series, and sending them to an archive.

- `source`: the source series' headers in the order of the case's image grid, the identifiers they lend
  (copied, never invented) and the check that every slice sits where the grid says.
- `seg`: DICOM Segmentation (one segment per lesion candidate, one for the stage-1 pancreas), with highdicom.
- `sr`: Comprehensive 3D SR, TID 1500 measurement report (likelihoods, volumes, centroids), with highdicom.
- `outputs`: both for one case, from the same record as the lesion list.
- `send`: C-STORE to an archive (pynetdicom), reporting which objects arrived.

This room imports only the shared modules (`pdac.errors`); `pdac.infer` calls it.
"""
