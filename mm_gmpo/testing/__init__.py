"""Tiny local model and tokenizer factories (text and VL) for tests and the CPU demo; no hub."""

from mm_gmpo.testing.models import (
    TINY_MAX_PIXELS,
    TINY_MIN_PIXELS,
    build_tiny_qwen2,
    build_tiny_qwen2_5_vl,
    tiny_model_dir,
    tiny_qwen2_5_vl_config,
    tiny_qwen2_config,
)
from mm_gmpo.testing.tokenizer import (
    CHAT_TEMPLATE,
    R1_DISTILL_STYLE_CHAT_TEMPLATE,
    SPECIAL_TOKENS,
    build_tokenizer,
)

__all__ = [
    "CHAT_TEMPLATE",
    "R1_DISTILL_STYLE_CHAT_TEMPLATE",
    "SPECIAL_TOKENS",
    "TINY_MAX_PIXELS",
    "TINY_MIN_PIXELS",
    "build_tiny_qwen2",
    "build_tiny_qwen2_5_vl",
    "build_tokenizer",
    "tiny_model_dir",
    "tiny_qwen2_5_vl_config",
    "tiny_qwen2_config",
]
