#!/usr/bin/env bash
# Geometry3K test accuracy of a Qwen2.5-VL checkpoint with the VL protocol: temperature 0.5,
# top-p 1.0, 16 samples per question, at most 2048 new tokens, the geometry prompt
# (<think>...</think> then \boxed{}), mean accuracy over all samples (= pass@1 from 16).
#
# Usage: CKPT=PATH_OR_HUB_ID [OUT=DIR] [LABEL=NAME] scripts/eval_geometry3k.sh [--dry-run] [options]
#
# Needs <data>/geometry3k/test.parquet: python -m data_prep geometry3k SRC --out-dir <data>/geometry3k
# (<data> is DATA_DIR, else $MM_GMPO_DATA_DIR, else <repo>/data), or the hub copy through
# --data geometry3k=hiyouga/geometry3k@test; --benchmarks mathvision runs on the shipped data. Options go to
# `mm-gmpo eval geometry` (see its --help), e.g. --benchmarks geometry3k mathvision, --tp 2,
# --min-pixels / --max-pixels (default: EasyR1's 262,144 / 4,194,304).
# --dry-run (or DRY_RUN=1): check the options, the protocol, the benchmark files and the
# verifiers without a model (ground-truth answers on 2 problems per benchmark).
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
launch_eval geometry --temperature 0.5 --top-p 1.0 --n 16 --max-new-tokens 2048 --template geometry \
  -- "${user[@]}"
