#!/usr/bin/env bash
# GMPO on a math LLM, MATH levels 3-5: the paper's text recipe (configs/paper_text_gmpo.yaml):
# Qwen2.5-Math-7B, clip (e^-0.4, e^0.4), lr 1e-6 constant, no KL, 128 prompts x 8 samples,
# 1 optimizer step and 1 epoch per rollout batch, temperature 1.0, top-p 1.0, prompts <= 1024
# and responses <= 3000 tokens, qwen_math prompt, math verifier, ZeRO-2, bf16, gradient
# checkpointing, vLLM colocated (sleeps while training), 8 GPUs.
#
# RECIPE=r1distill runs the paper's third row instead (configs/paper_text_r1distill_gmpo.yaml):
# DeepSeek-R1-Distill-Qwen-7B on DeepScaleR-Preview, its own chat template (opens <think>),
# responses <= 8192 tokens, 8 optimizer steps of 128 rollouts per rollout batch.
#
# Usage: scripts/train_text_gmpo.sh [--dry-run] [section.field=value ...]
#
# Environment (defaults in brackets):
#   RECIPE       [qwen_math]  r1distill for DeepSeek-R1-Distill-Qwen-7B on DeepScaleR (the
#                defaults of MODEL, TRAIN_DATA and the config follow the recipe)
#   MODEL        [Qwen/Qwen2.5-Math-7B]  e.g. Qwen/Qwen2.5-Math-1.5B, a local folder, tiny:qwen2
#   LOSS         [gmpo]   grpo for the GRPO baseline (its own clip range, 0.2, unless CLIP_* set)
#   CLIP_LOW / CLIP_HIGH  clip range (log space for gmpo*, ratio space otherwise)
#   TRAIN_DATA   [$DATA_DIR, $MM_GMPO_DATA_DIR or <repo>/data]/math/math_lvl3to5_train.jsonl (shipped);
#                r1distill: [agentica-org/DeepScaleR-Preview-Dataset@train] or a local deepscaler.json
#   OUTPUT_DIR   [runs/text_<loss>_<model name>]
#   STEPS        [the config's]   SEED [the config's]
#   ZERO_STAGE   [2]  3 for ZeRO-3; OFFLOAD=1 adds optimizer offload (states on the CPU)
#   LORA_RANK    [0: full fine-tuning]  e.g. 16: train LoRA adapters of that rank (peft)
#   NPROC_PER_NODE (or GPUS) [8], NNODES [1], LAUNCHER [torchrun], HOSTFILE, DRY_RUN, EXTRA_ARGS:
#                see scripts/launch_lib.sh and scripts/README.md (1 GPU to N nodes)
#
# Examples:
#   scripts/train_text_gmpo.sh --dry-run                               # check, no GPU needed
#   scripts/train_text_gmpo.sh                                         # GMPO-7B on 8 GPUs
#   LOSS=grpo scripts/train_text_gmpo.sh                               # the GRPO baseline
#   MODEL=Qwen/Qwen2.5-Math-1.5B scripts/train_text_gmpo.sh            # the 1.5B model
#   RECIPE=r1distill scripts/train_text_gmpo.sh                        # R1-Distill-Qwen-7B, DeepScaleR
#   HOSTFILE=hosts scripts/train_text_gmpo.sh                          # N nodes (DeepSpeed launcher)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/launch_lib.sh
source "$HERE/launch_lib.sh"

DATA_DIR="${DATA_DIR:-${MM_GMPO_DATA_DIR:-$LIB_REPO/data}}"
case "${RECIPE:-qwen_math}" in
  qwen_math)
    RECIPE_CONFIG="$LIB_REPO/configs/paper_text_gmpo.yaml"
    MODEL="${MODEL:-Qwen/Qwen2.5-Math-7B}"
    TRAIN_DATA="${TRAIN_DATA:-$DATA_DIR/math/math_lvl3to5_train.jsonl}"
    ;;
  r1distill)
    RECIPE_CONFIG="$LIB_REPO/configs/paper_text_r1distill_gmpo.yaml"
    MODEL="${MODEL:-deepseek-ai/DeepSeek-R1-Distill-Qwen-7B}"
    TRAIN_DATA="${TRAIN_DATA:-agentica-org/DeepScaleR-Preview-Dataset@train}"
    ;;
  *)
    echo "error: RECIPE must be qwen_math or r1distill, got '$RECIPE'" >&2
    exit 2
    ;;
esac
LOSS="${LOSS:-gmpo}"
export LOSS
OUTPUT_DIR="${OUTPUT_DIR:-runs/text_${LOSS}_$(basename "${MODEL#tiny:}")}"
NPROC_PER_NODE="${NPROC_PER_NODE:-${GPUS:-8}}"
export NPROC_PER_NODE

parse_script_args "$@"
recipe_args "$MODEL" "$TRAIN_DATA" "$OUTPUT_DIR"
launch_train "${CONFIG:-$RECIPE_CONFIG}" "${RECIPE_ARGS[@]}" "${OVERRIDES[@]}"
