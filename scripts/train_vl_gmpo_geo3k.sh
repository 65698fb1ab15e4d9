#!/usr/bin/env bash
# GMPO on Qwen2.5-VL-7B-Instruct, Geometry3K, with EasyR1's geometry3k recipe numbers
# (configs/paper_vl_gmpo_geo3k.yaml): rollout batch 512 prompts, global batch 128 (4 optimizer
# steps per rollout batch), 5 samples per prompt, lr 1e-6, weight decay 1e-2, grad clip 1.0,
# prompts and responses <= 2048 tokens, images between 262,144 and 4,194,304 pixels,
# temperature 1.0; GMPO loss (clip e^-0.4, e^0.4); reward 0.9 geometry accuracy + 0.1 format.
#
# Usage: scripts/train_vl_gmpo_geo3k.sh [--dry-run] [section.field=value ...]
#
# Environment (defaults in brackets):
#   MODEL        [Qwen/Qwen2.5-VL-7B-Instruct]  a local folder, tiny:qwen2_5_vl
#   LOSS         [gmpo]   grpo for the GRPO baseline (its own clip range unless CLIP_* set)
#   CLIP_LOW / CLIP_HIGH  clip range (log space for gmpo*, ratio space otherwise)
#   GEO3K_TRAIN  [$DATA_DIR, $MM_GMPO_DATA_DIR or <repo>/data]/geometry3k/train.parquet, made by
#                `python -m data_prep geometry3k SRC --out-dir <data>/geometry3k` (SRC: the Inter-GPS
#                release or hiyouga/geometry3k's parquet files), or the hub id hiyouga/geometry3k@train
#   OUTPUT_DIR   [runs/vl_<loss>_geo3k_<model name>]
#   STEPS        [the config's]   SEED [the config's]
#   ZERO_STAGE   [2]  3 for ZeRO-3; OFFLOAD=1 adds optimizer offload (states on the CPU)
#   LORA_RANK    [0: full fine-tuning]  e.g. 16: train LoRA adapters of that rank (peft)
#   NPROC_PER_NODE (or GPUS) [8], NNODES [1], LAUNCHER [torchrun], HOSTFILE, DRY_RUN, EXTRA_ARGS:
#                see scripts/launch_lib.sh and scripts/README.md (1 GPU to N nodes)
#
# Examples:
#   scripts/train_vl_gmpo_geo3k.sh --dry-run            # check, no GPU needed
#   scripts/train_vl_gmpo_geo3k.sh                      # 8 GPUs
#   LOSS=grpo scripts/train_vl_gmpo_geo3k.sh            # the GRPO baseline
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/launch_lib.sh
source "$HERE/launch_lib.sh"

DATA_DIR="${DATA_DIR:-${MM_GMPO_DATA_DIR:-$LIB_REPO/data}}"
MODEL="${MODEL:-Qwen/Qwen2.5-VL-7B-Instruct}"
LOSS="${LOSS:-gmpo}"
export LOSS
GEO3K_TRAIN="${GEO3K_TRAIN:-$DATA_DIR/geometry3k/train.parquet}"
OUTPUT_DIR="${OUTPUT_DIR:-runs/vl_${LOSS}_geo3k_$(basename "${MODEL#tiny:}")}"
NPROC_PER_NODE="${NPROC_PER_NODE:-${GPUS:-8}}"
export NPROC_PER_NODE

parse_script_args "$@"
recipe_args "$MODEL" "$GEO3K_TRAIN" "$OUTPUT_DIR"
launch_train "${CONFIG:-$LIB_REPO/configs/paper_vl_gmpo_geo3k.yaml}" "${RECIPE_ARGS[@]}" "${OVERRIDES[@]}"
