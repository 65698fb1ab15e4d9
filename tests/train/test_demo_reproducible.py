"""The demo's numbers do not depend on the machine: its pictures are the same in any process, and
its training arithmetic uses one instruction set on every x86 CPU (``pin_cpu_numerics``)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

PICTURES = """
import hashlib, io
from PIL import Image
from mm_gmpo.data.synthetic_vl import make_square_records

h = hashlib.sha256()
for split in ("train", "test"):
    for record in make_square_records(60, seed=1, split=split):
        h.update(record.answer.encode())
        h.update(Image.open(io.BytesIO(record.images[0])).convert("RGB").tobytes())  # the pixels
print(h.hexdigest())
"""

# A tiny Qwen2 trained a few AdamW steps: the kernels of the warm start (matmul, softmax, norms,
# reductions, the optimizer), hashed bit for bit.
TRAINING = """
import hashlib, sys
pin = sys.argv[1] == "pin"
if pin:
    from mm_gmpo.train.demo import pin_cpu_numerics
    pin_cpu_numerics()
import torch
from transformers import Qwen2ForCausalLM
from mm_gmpo.testing import tiny_qwen2_config

torch.manual_seed(0)
model = Qwen2ForCausalLM(tiny_qwen2_config())
ids = torch.randint(0, 300, (8, 24))  # [B, T]
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
for _ in range(3):
    loss = model(input_ids=ids, labels=ids).loss
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
h = hashlib.sha256()
for name, value in sorted(model.state_dict().items()):
    h.update(name.encode())
    h.update(value.detach().contiguous().numpy().tobytes())
print(torch.backends.cpu.get_cpu_capability(), h.hexdigest())
"""


def _run(script: str, *args: str, **env: str) -> str:
    full_env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR")}
    full_env.update({"PYTHONPATH": str(REPO), **env})
    proc = subprocess.run(
        [sys.executable, "-c", script, *args], env=full_env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


def test_vl_pictures_are_the_same_whatever_the_threads_and_hash_seed() -> None:
    """Drawn squares only (no font, no clock, no set order): the same pixels in every process."""
    one = _run(PICTURES, OMP_NUM_THREADS="1", PYTHONHASHSEED="1")
    two = _run(PICTURES, OMP_NUM_THREADS="2", PYTHONHASHSEED="2")
    assert one == two


def _has_avx2() -> bool:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    import torch

    return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


@pytest.mark.slow
@pytest.mark.skipif(not _has_avx2(), reason="pin_cpu_numerics acts on x86 CPUs with AVX2")
def test_the_demo_trains_bit_for_bit_alike_whatever_the_cpu_prefers() -> None:
    """A CPU whose kernels would use AVX-512 (forced here by the environment) and one that uses
    AVX2 train the demo's model to the same bits once the demo pins the instruction set."""
    wide = _run(TRAINING, "pin", ATEN_CPU_CAPABILITY="avx512", OMP_NUM_THREADS="2")
    narrow = _run(TRAINING, "pin", ATEN_CPU_CAPABILITY="default", OMP_NUM_THREADS="1")
    assert wide.split()[0] == narrow.split()[0] == "AVX2"
    assert wide == narrow
    import torch

    if torch.backends.cpu.get_cpu_capability() == "AVX512":
        # Unpinned, the two instruction sets give other bits: the pin is what makes them agree.
        native = _run(TRAINING, "native", OMP_NUM_THREADS="2")
        assert native.split()[0] == "AVX512"
        assert native.split()[1] != wide.split()[1]
