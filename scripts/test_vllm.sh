#!/usr/bin/env bash
# The vLLM engine tests (tests/vllm, marker `vllm`) in their own environment .venv-vllm:
# sets it up first (idempotent, see setup_vllm_env.sh), then runs pytest there. The main
# environment's `pytest tests` skips these same files cleanly (no vllm installed).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_vllm_env.sh
VENV=${MM_GMPO_VLLM_VENV:-.venv-vllm}
# In-process engine (no spawned workers to hang), a small CPU KV cache; quiet vLLM's INFO lines.
export VLLM_ENABLE_V1_MULTIPROCESSING=0 VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1}
export VLLM_LOGGING_LEVEL=${VLLM_LOGGING_LEVEL:-WARNING}
exec timeout "${MM_GMPO_VLLM_TEST_TIMEOUT:-900}" "$VENV/bin/python" -m pytest -q -m vllm tests/vllm "$@"
