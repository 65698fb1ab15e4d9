#!/usr/bin/env bash
# Creates .venv with the project and its test tools. Idempotent: a second run with the same
# pyproject.toml does nothing. Pins torch explicitly so pip never pulls a multi-GB build by
# accident: torch 2.14.1 + torchvision 0.29.1 are the builds that import together here
# (qwen-vl-utils needs torchvision); on aarch64 the CPU pair 2.9.1 / 0.24.1.
#
# Prints one line per stage (scripts/setup_lib.sh): pip's warnings stay out, its errors show.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${MM_GMPO_VENV:-.venv}
PY=${PYTHON:-python3}

case "$(uname -m)" in
  aarch64|arm64) TORCH_PINS="torch==2.9.1 torchvision==0.24.1" ;;
  *) TORCH_PINS="torch==2.14.1 torchvision==0.29.1" ;;
esac

stamp="$VENV/.mm_gmpo_setup"
want="$(cat pyproject.toml scripts/setup_env.sh scripts/setup_lib.sh | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

# shellcheck source=scripts/setup_lib.sh
source scripts/setup_lib.sh

pip() { "$VENV/bin/python" -m pip --disable-pip-version-check "$@"; }

echo "[setup] $VENV (torch pins: $TORCH_PINS)"
[ -x "$VENV/bin/python" ] || stage "creating the virtual environment" "$PY" -m venv "$VENV"
stage "upgrading pip" pip install -q --upgrade pip
# shellcheck disable=SC2086
stage "installing $TORCH_PINS" pip install -q $TORCH_PINS
# DeepSpeed builds no CUDA ops at install time (they JIT-compile on first use where needed).
stage "installing mm-gmpo (editable) with its dependencies and test tools" \
  env DS_BUILD_OPS=0 "$VENV/bin/python" -m pip --disable-pip-version-check install -q -e '.[dev]'
echo "$want" > "$stamp"
echo "[setup] done"
