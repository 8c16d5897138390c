"""Scoring detection maps against labels as PANORAMA does (picai_eval), with bootstrap CIs and reports.

Lesion matching, the patient ROC and the lesion precision-recall curve are picai_eval's, with PANORAMA's
settings (IoU >= 0.1 between a candidate and a connected component of label == 1). On top of that:
bootstrap 95% confidence intervals over cases, FROC operating points, lesion Dice, paired bootstrap
p-values between detection sets, and a report folder (metrics.json, summary.md, roc.png, pr.png, froc.png).

    discovery   detection maps, labels and likelihood files found and paired; header geometry checked
    metrics     per-case matching (picai_eval), `SetResult` (AUROC, AP, score), FROC; evaluate_arrays / _sets
    bootstrap   bootstrap CIs and paired p-values
    report      metrics.json, summary.md, plots
    run         `pdac evaluate` (run_evaluation): all of the above, in order

Python API::

    from pdac.evaluation.metrics import evaluate_arrays
    from pdac.evaluation.run import run_evaluation

    result = evaluate_arrays({"c1": det1, "c2": det2}, {"c1": lab1, "c2": lab2})   # in memory
    result.auroc, result.ap, result.score, result.froc().sensitivity_at(0.5)

    report = run_evaluation(["out_a", "out_b"], "labels", "report", names=["A", "B"], n_bootstrap=1000)
    report.data["sets"][0]["auroc"], report.summary
"""
