#!/usr/bin/env bash
# Example SLURM array job: spread a cohort over N machines with `pdac detect --shard K/N`.
# Each task writes its own likelihood file (pdac-likelihood.shardKofN.json); per-case outputs share OUT.
# Merge afterwards (refuses, naming them, if shards are missing):  .venv/bin/pdac merge OUT
#
# Submit:  sbatch --array=0-7 scripts/slurm_detect.sh /data/scans /data/pdac-out
# or merge in a dependent job:
#   jid=$(sbatch --parsable --array=0-7 scripts/slurm_detect.sh /data/scans /data/pdac-out)
#   sbatch --dependency=afterok:$jid --wrap ".venv/bin/pdac merge /data/pdac-out"
#SBATCH --job-name=pdac-detect
#SBATCH --cpus-per-task=4
#SBATCH --mem=16G
#SBATCH --time=04:00:00
#SBATCH --output=pdac-detect-%A_%a.log
set -euo pipefail

SCANS="${1:?usage: slurm_detect.sh SCAN_DIR OUT_DIR}"
OUT="${2:?usage: slurm_detect.sh SCAN_DIR OUT_DIR}"
K="${SLURM_ARRAY_TASK_ID:?run as an array job (sbatch --array=0-N)}"
N="${SLURM_ARRAY_TASK_COUNT:?run as an array job}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

"$REPO/.venv/bin/pdac" detect "$SCANS" -o "$OUT" --shard "$K/$N" --threads "${SLURM_CPUS_PER_TASK:-4}"
