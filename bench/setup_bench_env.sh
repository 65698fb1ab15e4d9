#!/usr/bin/env bash
# Creates .venv-bench: the benchmark environment holding TRL (row 1 of bench/RESULTS.md compares
# mm-gmpo's RL step with TRL's GMPO trainer, `trl.experimental.gmpo`, first released in TRL 1.x;
# 1.16.0 is the release checked here).
#
# TRL stays out of the main .venv: it is a peer we measure against, not a dependency.
# torch and transformers are pinned to the main environment's versions so that both frameworks
# run the same kernels and the same `generate`; torch is asked for by exact version so pip takes
# the build on this machine's disk and never pulls another one.
#
# Idempotent: a second run with the same script and pyproject.toml does nothing (stamp file).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${MM_GMPO_BENCH_VENV:-.venv-bench}
PY=${PYTHON:-python3}
TORCH_PIN="torch==2.14.1"
TRANSFORMERS_PIN="transformers==5.24.0"
TRL_PIN="trl==1.16.0"

stamp="$VENV/.mm_gmpo_bench_setup"
want="$(cat pyproject.toml bench/setup_bench_env.sh | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

t0=$(date +%s)
echo "[setup-bench] creating $VENV ($TORCH_PIN, $TRANSFORMERS_PIN, $TRL_PIN)"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# keep the environment out of git without touching the repository's .gitignore
echo '*' > "$VENV/.gitignore"
PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install -q --upgrade pip
"${PIP[@]}" install -q "$TORCH_PIN"
# mm-gmpo itself (same code for the synthetic prompts, the tiny model and the reward check),
# then TRL; the torch pin is re-stated so the resolver keeps the build it already has.
DS_BUILD_OPS=0 "${PIP[@]}" install -q -e . "$TORCH_PIN" "$TRANSFORMERS_PIN"
"${PIP[@]}" install -q "$TRL_PIN" "$TORCH_PIN" "$TRANSFORMERS_PIN" psutil
"$VENV/bin/python" - <<'PY'
import torch, transformers, trl
from trl.experimental.gmpo import GMPOConfig, GMPOTrainer  # noqa: F401  (the peer under test)
assert torch.__version__.startswith("2.14.1"), torch.__version__
print(f"[setup-bench] torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}")
PY
echo "$want" > "$stamp"
echo "[setup-bench] done in $(( $(date +%s) - t0 )) s"
