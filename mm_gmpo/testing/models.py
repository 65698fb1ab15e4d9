"""Tiny random Qwen2 and Qwen2.5-VL checkpoints, built locally and saved like real ones.

Why: no machine here reaches the hub, but the text and VL paths must be exercised end to end
(``from_pretrained``, generation, mRoPE, image collation, vLLM loading) with the very code a real
run uses. These factories write a directory that looks like a hub snapshot: config,
generation_config, safetensors weights, tokenizer, and for the VL model the processor.

Shapes are chosen so real engines accept them: attention head_dim is 64 (vLLM's kernels support
it), the vision tower's out_hidden_size equals the text hidden size, and mRoPE sections sum to
head_dim / 2. Same seed, same weights.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Literal

import torch

from mm_gmpo.saving import save_pretrained
from mm_gmpo.testing.tokenizer import EOS_TOKEN, PAD_TOKEN, build_tokenizer

# Test-sized image limits: 4 to 16 merged image tokens per image (one token = 28x28 pixels).
TINY_MIN_PIXELS = 4 * 28 * 28
TINY_MAX_PIXELS = 16 * 28 * 28

_TEXT_DEFAULTS: dict[str, Any] = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,  # head_dim = 128 / 2 = 64
    "num_key_value_heads": 1,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-6,
    "hidden_act": "silu",
}


def _special_ids(tok_dir: Path) -> dict[str, int]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tok_dir)
    names = {
        "pad": PAD_TOKEN,
        "eos": EOS_TOKEN,
        "im_start": "<|im_start|>",
        "vision_start": "<|vision_start|>",
        "vision_end": "<|vision_end|>",
        "image": "<|image_pad|>",
        "video": "<|video_pad|>",
    }
    ids = {k: int(tok.convert_tokens_to_ids(v)) for k, v in names.items()}
    ids["vocab_size"] = len(tok)
    return ids


def _generation_config(ids: dict[str, int]) -> Any:
    """Token ids only, no sampling defaults: tests and engines set those explicitly."""
    from transformers import GenerationConfig

    return GenerationConfig(
        bos_token_id=ids["pad"],
        eos_token_id=[ids["eos"], ids["pad"]],
        pad_token_id=ids["pad"],
    )


def _seeded_init(seed: int, make: Any) -> Any:
    """Build a module under ``torch.manual_seed(seed)`` without disturbing the caller's RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()


def tiny_qwen2_config(ids: dict[str, int] | None = None, **config_overrides: Any) -> Any:
    """The ``Qwen2Config`` :func:`build_tiny_qwen2` saves (``ids``: the tokenizer's special ids).

    Also what the dry run's memory plan reads a ``tiny:qwen2`` model's shape from, so the plan and
    the built model cannot disagree.
    """
    from transformers import Qwen2Config

    ids = ids if ids is not None else _special_ids(tiny_model_dir("tokenizer"))
    kwargs: dict[str, Any] = {
        **_TEXT_DEFAULTS,
        "vocab_size": ids["vocab_size"],
        "tie_word_embeddings": True,
        "bos_token_id": ids["pad"],
        "eos_token_id": [ids["eos"], ids["pad"]],
        "pad_token_id": ids["pad"],
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
        "dtype": "float32",
    }
    kwargs.update(config_overrides)
    return Qwen2Config(**kwargs)


def build_tiny_qwen2(out_dir: str | Path, seed: int = 0, **config_overrides: Any) -> Path:
    """Save a tiny random ``Qwen2ForCausalLM`` (fp32) plus its tokenizer to ``out_dir``.

    Defaults: hidden 128, 2 layers, 2 heads (head_dim 64), 1 KV head, intermediate 256, tied
    embeddings (as Qwen2.5-Math-1.5B). ``config_overrides`` go straight into ``Qwen2Config``.
    eos = [<|im_end|>, <|endoftext|>], pad = bos = <|endoftext|>.
    """
    from transformers import Qwen2ForCausalLM

    out = Path(out_dir)
    build_tokenizer(out)
    ids = _special_ids(out)
    config = tiny_qwen2_config(ids, **config_overrides)
    model = _seeded_init(seed, lambda: Qwen2ForCausalLM(config))
    model.generation_config = _generation_config(ids)
    save_pretrained(model, out)
    return out


def tiny_qwen2_5_vl_config(ids: dict[str, int] | None = None, **overrides: Any) -> Any:
    """The ``Qwen2_5_VLConfig`` :func:`build_tiny_qwen2_5_vl` saves (``ids``: the tokenizer's special ids).

    ``overrides`` as for the builder (``text_config`` / ``vision_config`` dicts merged into the
    defaults, other keys top-level); ``min_pixels`` / ``max_pixels`` belong to the processor and
    are ignored here.
    """
    from transformers import Qwen2_5_VLConfig

    ids = ids if ids is not None else _special_ids(tiny_model_dir("tokenizer"))
    overrides = {k: v for k, v in overrides.items() if k not in ("min_pixels", "max_pixels")}
    text_config: dict[str, Any] = {
        **_TEXT_DEFAULTS,
        "vocab_size": ids["vocab_size"],
        "bos_token_id": ids["pad"],
        "eos_token_id": [ids["eos"], ids["pad"]],
        "pad_token_id": ids["pad"],
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [8, 12, 12]},
        "dtype": "float32",
    }
    text_config.update(overrides.pop("text_config", {}) or {})
    vision_config: dict[str, Any] = {
        "depth": 2,
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_heads": 2,  # vision head_dim 64
        "out_hidden_size": text_config["hidden_size"],
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 112,
        "fullatt_block_indexes": [1],
        "dtype": "float32",
    }
    vision_config.update(overrides.pop("vision_config", {}) or {})
    config = Qwen2_5_VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids["image"],
        video_token_id=ids["video"],
        vision_start_token_id=ids["vision_start"],
        vision_end_token_id=ids["vision_end"],
        tie_word_embeddings=False,
        **overrides,
    )
    config.dtype = "float32"
    return config


def build_tiny_qwen2_5_vl(
    out_dir: str | Path,
    seed: int = 0,
    min_pixels: int = TINY_MIN_PIXELS,
    max_pixels: int = TINY_MAX_PIXELS,
    **overrides: Any,
) -> Path:
    """Save a tiny random ``Qwen2_5_VLForConditionalGeneration`` plus its processor to ``out_dir``.

    Text part as ``build_tiny_qwen2`` (untied embeddings, as Qwen2.5-VL-7B; mRoPE sections
    [8, 12, 12] for head_dim 64). Vision tower: depth 2, hidden 128, 2 heads, patch 14, merge 2,
    full attention in the last block. The image processor defaults to 4..16 image tokens per
    image (``min_pixels`` / ``max_pixels``).

    ``overrides`` may hold ``text_config`` and ``vision_config`` dicts (merged into the defaults)
    and any top-level ``Qwen2_5_VLConfig`` field.
    """
    from transformers import (
        AutoTokenizer,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    out = Path(out_dir)
    build_tokenizer(out)
    ids = _special_ids(out)
    config = tiny_qwen2_5_vl_config(ids, **overrides)
    model = _seeded_init(seed, lambda: Qwen2_5_VLForConditionalGeneration(config))
    model.generation_config = _generation_config(ids)
    save_pretrained(model, out)

    patch = config.vision_config.patch_size
    merge = config.vision_config.spatial_merge_size
    temporal = config.vision_config.temporal_patch_size
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(
            min_pixels=min_pixels,
            max_pixels=max_pixels,
            patch_size=patch,
            merge_size=merge,
            temporal_patch_size=temporal,
        ),
        tokenizer=AutoTokenizer.from_pretrained(out),
        video_processor=Qwen2VLVideoProcessor(
            min_pixels=min_pixels,
            max_pixels=max_pixels,
            patch_size=patch,
            merge_size=merge,
            temporal_patch_size=temporal,
        ),
    )
    processor.chat_template = processor.tokenizer.chat_template
    processor.save_pretrained(out)
    return out


TinyKind = Literal["tokenizer", "qwen2", "qwen2_5_vl"]
_BUILDERS = {
    "tokenizer": lambda out, seed: build_tokenizer(out),
    "qwen2": lambda out, seed: build_tiny_qwen2(out, seed=seed),
    "qwen2_5_vl": lambda out, seed: build_tiny_qwen2_5_vl(out, seed=seed),
}
_cache: dict[tuple[str, int], Path] = {}
_cache_root: Path | None = None
_cache_lock = threading.Lock()


def tiny_model_dir(kind: TinyKind, seed: int = 0) -> Path:
    """Build a default tiny model (or just the tokenizer) once per process and return its dir.

    The directory lives under a per-process temporary folder that is removed at exit, so
    tests and the demo share one build without a stale cross-run cache. Treat it as read-only:
    build your own with the ``build_*`` functions when you need to modify one.
    """
    global _cache_root
    if kind not in _BUILDERS:
        raise ValueError(f"unknown tiny model kind {kind!r}; valid: {sorted(_BUILDERS)}")
    with _cache_lock:
        key = (kind, seed)
        if key not in _cache:
            if _cache_root is None:
                _cache_root = Path(tempfile.mkdtemp(prefix="mm_gmpo_tiny_"))
                atexit.register(shutil.rmtree, _cache_root, True)
            _cache[key] = _BUILDERS[kind](_cache_root / f"{kind}-seed{seed}", seed)
        return _cache[key]
