"""One in-process vLLM engine per model for the whole vLLM test session (start-up dominates).

The environment variables must be set before vLLM is imported: the engines run in this
process (no spawned workers, so no ``__main__`` guard is needed) with a 1 GiB CPU KV cache.
In the main environment vLLM is absent and every test here that needs it skips.

The VL engine serves the tiny Qwen2.5-VL with at most two images per prompt and 32-token KV
blocks (the CPU default is 128): with them the prefix cache holds the image tokens of these
~100-token prompts, as it does for real prompts with 128-token blocks, so the cache resets
after a weight sync are exercised (tests/vllm/test_vllm_vl.py).
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


VL_MAX_IMAGES = 2
VL_BLOCK_SIZE = 32


@pytest.fixture(scope="session")
def vl_dir(tmp_path_factory):
    pytest.importorskip("qwen_vl_utils", reason="the VL path needs qwen-vl-utils")
    from mm_gmpo.testing import build_tiny_qwen2_5_vl

    return build_tiny_qwen2_5_vl(tmp_path_factory.mktemp("vllm_tiny_vl") / "m", seed=0)


@pytest.fixture(scope="session")
def vl_processor(vl_dir):
    from mm_gmpo.vl.model import load_vl_processor

    return load_vl_processor(vl_dir, min_pixels=None, max_pixels=None)  # the tiny model's own budget


@pytest.fixture(scope="session")
def vl_engine(vl_dir, vl_processor):
    """The engine is built from the path's request builder, as ``build_vllm_engine`` does."""
    pytest.importorskip("vllm", reason=SKIP_REASON)
    from mm_gmpo.rollout.vllm import VLLMEngine
    from mm_gmpo.vl.model import load_vl_model_skeleton
    from mm_gmpo.vl.path import VLPolicyPath

    skeleton = load_vl_model_skeleton(vl_dir)
    path = VLPolicyPath(vl_processor, skeleton, "geometry", 512, max_images_per_prompt=VL_MAX_IMAGES)
    return VLLMEngine(
        vl_dir,
        requests=path.vllm_requests(),
        dtype="float32",
        max_model_len=512,
        seed=0,
        extra_llm_kwargs={"block_size": VL_BLOCK_SIZE},
    )
