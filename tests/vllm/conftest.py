"""In-process vLLM engines for the vLLM tests, one at a time (start-up dominates the cost).

The environment variables must be set before vLLM is imported: the engines run in this
process (no spawned workers, so no ``__main__`` guard is needed) with a 1 GiB CPU KV cache.
In the main environment vLLM is absent and every test here that needs it skips.

One engine at a time: closing an in-process engine tears down vLLM's process-global parallel
groups, which every other in-process engine shares (see ``VLLMEngine.close``). So the text and
the VL engine take turns in one slot (tests of one kind sit in the same files, so each is built
about once), and a test that builds its own engine (``build_run``) empties the slot first.

The VL engine serves the tiny Qwen2.5-VL with at most two images per prompt and 32-token KV
blocks (the CPU default is 128): with them the prefix cache holds the image tokens of these
~100-token prompts, as it does for real prompts with 128-token blocks, so the cache resets
after a weight sync are exercised (tests/vllm/test_vllm_vl.py).
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable
from typing import Any

import pytest

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

SKIP_REASON = (
    "vLLM is not installed in this environment; these tests run in .venv-vllm "
    "(bash scripts/test_vllm.sh); the HF engine's parity test is their CPU twin"
)
VL_MAX_IMAGES = 2
VL_BLOCK_SIZE = 32


class EngineSlot:
    """Holds at most one live vLLM engine; asking for another kind closes the current one."""

    def __init__(self) -> None:
        self.kind: str | None = None
        self.engine: Any = None

    def get(self, kind: str, build: Callable[[], Any]) -> Any:
        if self.kind != kind:
            self.release()
            self.engine, self.kind = build(), kind
        return self.engine

    def release(self) -> None:
        if self.engine is not None:
            self.engine.close()
        self.engine, self.kind = None, None
        gc.collect()


@pytest.fixture(scope="session")
def engine_slot():
    slot = EngineSlot()
    yield slot
    slot.release()


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    from mm_gmpo.testing import build_tiny_qwen2

    return build_tiny_qwen2(tmp_path_factory.mktemp("vllm_tiny") / "m", seed=0)


@pytest.fixture()
def vllm_engine(tiny_dir, engine_slot):
    pytest.importorskip("vllm", reason=SKIP_REASON)
    from mm_gmpo.rollout.vllm import VLLMEngine

    return engine_slot.get(
        "text", lambda: VLLMEngine(tiny_dir, dtype="float32", enforce_eager=True, max_model_len=512, seed=0)
    )


@pytest.fixture(scope="session")
def vl_dir(tmp_path_factory):
    pytest.importorskip("qwen_vl_utils", reason="the VL path needs qwen-vl-utils")
    from mm_gmpo.testing import build_tiny_qwen2_5_vl

    return build_tiny_qwen2_5_vl(tmp_path_factory.mktemp("vllm_tiny_vl") / "m", seed=0)


@pytest.fixture(scope="session")
def vl_processor(vl_dir):
    from mm_gmpo.vl.model import load_vl_processor

    return load_vl_processor(vl_dir, min_pixels=None, max_pixels=None)  # the tiny model's own budget


@pytest.fixture()
def vl_engine(vl_dir, vl_processor, engine_slot):
    """Built from the VL path's request builder, as ``build_vllm_engine`` does."""
    pytest.importorskip("vllm", reason=SKIP_REASON)
    from mm_gmpo.rollout.vllm import VLLMEngine
    from mm_gmpo.vl.model import load_vl_model_skeleton
    from mm_gmpo.vl.path import VLPolicyPath

    def build() -> Any:
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

    return engine_slot.get("vl", build)
