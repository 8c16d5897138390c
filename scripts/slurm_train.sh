#!/usr/bin/env bash
# Example SLURM job: one stage-2 fold with nnU-Net's own multi-GPU (DDP) training (`pdac train --num-gpus N`).
# nnU-Net splits each batch over the N GPUs of one node; run the five folds as five jobs (or an array).
#
# Submit:  sbatch --array=0-4 scripts/slurm_train.sh 114 nnUNetTrainerTverskyCELoss nnUNetResEncUNetMPlans
# (nnUNet_raw, nnUNet_preprocessed and nnUNet_results must be set in the environment.)
#SBATCH --job-name=pdac-train
#SBATCH --gres=gpu:4
#SBATCH --cpus-per-task=32
#SBATCH --mem=128G
#SBATCH --time=48:00:00
#SBATCH --output=pdac-train-%A_%a.log
set -euo pipefail

DATASET="${1:?usage: slurm_train.sh DATASET TRAINER PLANS}"
TRAINER="${2:?usage: slurm_train.sh DATASET TRAINER PLANS}"
PLANS="${3:?usage: slurm_train.sh DATASET TRAINER PLANS}"
FOLD="${SLURM_ARRAY_TASK_ID:-0}"
GPUS="$(nvidia-smi -L | wc -l)"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export nnUNet_n_proc_DA="${nnUNet_n_proc_DA:-$(( SLURM_CPUS_PER_TASK / GPUS ))}"

"$REPO/.venv/bin/pdac" train "$DATASET" "$FOLD" --trainer "$TRAINER" --plans "$PLANS" --device cuda \
    --num-gpus "$GPUS" --resume
