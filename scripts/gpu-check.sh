#!/usr/bin/env bash
# GPU readiness in one command (under 10 minutes on one GPU): versions and device, then the official
# baseline's real-size plans (random weights) end to end on a full-size phantom with 1 fold and with
# 5 folds + TTA; per-stage seconds and peak GPU memory. Results: docs/bench/gpu-check.json.
#   scripts/gpu-check.sh                 # needs the project's .venv (make install) and a CUDA GPU
#   scripts/gpu-check.sh --size large    # 512 x 512 x 400 phantom
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-.venv/bin/python}"
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
mkdir -p docs/bench
exec "$PY" -m pdac.lab.gpu_check --json docs/bench/gpu-check.json "$@"
