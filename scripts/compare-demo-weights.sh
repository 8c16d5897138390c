#!/usr/bin/env bash
# Side by side: two weights folders on the label-map generator's held-out test patients and on procedural
# phantoms, lesion AUROC/AP with bootstrap CIs (pdac evaluate), plus stage 1 on the bundled real scans.
# Usage: scripts/compare-demo-weights.sh OLD_WEIGHTS NEW_WEIGHTS [WORK] [LABELMAPS]
# Synthetic data only; both sets are the ones `make demo-weights` scores on (held-out seed 2, 24 volumes).
set -euo pipefail
old=${1:?old weights folder}; new=${2:?new weights folder}
work=${3:-work/compare}; labelmaps=${4:-../shared/data/labelmaps}
pdac=(.venv/bin/python -m pdac)
mkdir -p "$work"
[ -f "$work/synth_test/truth.json" ] || "${pdac[@]}" synth --labelmaps "$labelmaps" -o "$work/synth_test" \
    -n 24 --split test --seed 2 --previews 0 --workers 2
[ -f "$work/phantoms/truth.json" ] || "${pdac[@]}" phantom -o "$work/phantoms" -n 24 --seed 2 --previews 0 --workers 2
for set in synth_test phantoms; do
  for w in old new; do
    weights=$old; [ "$w" = new ] && weights=$new
    [ -f "$work/det-$set-$w/pdac-likelihood.json" ] || \
      "${pdac[@]}" detect "$work/$set/imagesTr" -o "$work/det-$set-$w" --weights "$weights"
  done
  "${pdac[@]}" evaluate --detections "$work/det-$set-old" "$work/det-$set-new" --names old new \
      --likelihoods "$work/det-$set-old/pdac-likelihood.json" "$work/det-$set-new/pdac-likelihood.json" \
      --labels "$work/$set/labelsTr" -o "$work/report-$set" --bootstrap 2000
done
for w in old new; do
  weights=$old; [ "$w" = new ] && weights=$new
  echo "== stage 1 on real scans, $w weights ($weights)"
  "${pdac[@]}" real-scan --weights "$weights" --json "$work/real-scans-$w.json"
done
