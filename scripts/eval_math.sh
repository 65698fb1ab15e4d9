#!/usr/bin/env bash
# The paper's math table (Table 1 of arXiv 2507.20673) for one checkpoint: AIME24, AMC,
# MATH500, Minerva, OlympiadBench with the paper's protocol: greedy decoding, 1 sample, at most
# 3000 new tokens, the qwen_math prompt, pass@1 per benchmark and their plain average.
#
# Usage: CKPT=PATH_OR_HUB_ID [OUT=DIR] [LABEL=NAME] scripts/eval_math.sh [--dry-run] [options]
#
# CKPT: a hub id, a model folder, a training checkpoint (checkpoints/step_N) or a training run
# folder (its latest checkpoint). OUT defaults to runs/eval/<CKPT's name>. Options go to
# `mm-gmpo eval math` (see its --help), e.g. --benchmarks math500 aime24, --tp 2,
# --backend hf; DATA_DIR replaces $MM_GMPO_DATA_DIR / <repo>/data (where the suites ship).
# --dry-run (or DRY_RUN=1): check the options, the protocol, the benchmark files and the
# verifiers without a model (ground-truth answers on 2 problems per benchmark).
#
# Then one table for several checkpoints (e.g. GRPO vs GMPO):
#   python -m mm_gmpo eval tables --compare runs/eval/grpo-7b runs/eval/gmpo-7b
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/launch_lib.sh
source "$HERE/launch_lib.sh"

user=()
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) user+=("$arg") ;;
  esac
done
launch_eval math --temperature 0 --top-p 1.0 --n 1 --max-new-tokens 3000 --template qwen_math \
  -- "${user[@]}"
