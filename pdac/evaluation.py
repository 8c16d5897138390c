"""PANORAMA metrics with picai_eval: lesion AP from detection maps (IoU >= 0.1 on label 1), patient
AUROC from the likelihoods (or from each map's maximum), score = (AUROC + AP) / 2."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def pdac_truth(label: np.ndarray) -> np.ndarray:
    """PANORAMA's ground truth for detection: the PDAC label (1) only."""
    return (np.asarray(label) == 1).astype(np.int32)


def panorama_metrics(detections: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray],
                     likelihoods: Mapping[str, float] | None = None, num_parallel_calls: int = 1):
    """picai_eval Metrics for the cases of `detections` (labels are raw PANORAMA label maps)."""
    from picai_eval import Metrics, evaluate

    cases = sorted(detections)
    missing = [c for c in cases if c not in labels]
    if missing:
        raise KeyError(f"no label for cases: {', '.join(missing[:5])}")
    metrics = evaluate(
        y_det=[np.asarray(detections[c], dtype=np.float32) for c in cases],
        y_true=[np.asarray(labels[c]) for c in cases],
        subject_list=cases,
        min_overlap=0.10,
        overlap_func="IoU",
        y_true_postprocess_func=pdac_truth,
        num_parallel_calls=num_parallel_calls,
    )
    if likelihoods is not None:
        metrics = Metrics(lesion_results=metrics.lesion_results, case_target=metrics.case_target,
                          case_pred={c: float(likelihoods[c]) for c in cases})
    return metrics
