"""One in-process vLLM engine for the whole vLLM test session (start-up dominates the cost).

The environment variables must be set before vLLM is imported: the engine runs in this
process (no spawned workers, so no ``__main__`` guard is needed) with a 1 GiB CPU KV cache.
In the main environment vLLM is absent and every test here that needs it skips.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

SKIP_REASON = (
    "vLLM is not installed in this environment; these tests run in .venv-vllm "
    "(bash scripts/test_vllm.sh); the HF engine's parity test is their CPU twin"
)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    from mm_gmpo.testing import build_tiny_qwen2

    return build_tiny_qwen2(tmp_path_factory.mktemp("vllm_tiny") / "m", seed=0)


@pytest.fixture(scope="session")
def vllm_engine(tiny_dir):
    pytest.importorskip("vllm", reason=SKIP_REASON)
    from mm_gmpo.rollout.vllm import VLLMEngine

    return VLLMEngine(tiny_dir, dtype="float32", enforce_eager=True, max_model_len=512, seed=0)
