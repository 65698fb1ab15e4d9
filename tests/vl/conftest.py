"""Shared fixtures of the VL tests: the tiny Qwen2.5-VL, its processor, the path, test pictures."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from PIL import Image

from mm_gmpo.data.records import Record
from mm_gmpo.testing import tiny_model_dir
from mm_gmpo.vl.model import load_vl_model, load_vl_processor
from mm_gmpo.vl.path import VLPolicyPath


def gradient_png(width: int, height: int, seed: int = 0) -> bytes:
    """A non-constant picture (a constant one would hide patch-order and image-mixing bugs)."""
    img = Image.new("RGB", (width, height))
    img.putdata(
        [
            ((x * 7 + seed * 31) % 256, (y * 5 + seed) % 256, (x + y + seed * 11) % 256)
            for y in range(height)
            for x in range(width)
        ]
    )
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def mixed_records() -> list[Record]:
    """Four prompts: different image sizes and aspect ratios, the second with two images."""
    return [
        Record("a", "How many sides?", "3", images=[gradient_png(60, 40, 1)]),
        Record(
            "b",
            "Compare the <image> first figure with the <image> second one.",
            "4",
            images=[gradient_png(200, 90, 2), gradient_png(40, 150, 3)],
        ),
        Record("c", "Which one is larger?", "5", images=[gradient_png(112, 112, 4)]),
        Record(
            "d", "Read the number written in this diagram, please.", "6", images=[gradient_png(300, 300, 5)]
        ),
    ]


@pytest.fixture(scope="session")
def vl_dir() -> Path:
    return tiny_model_dir("qwen2_5_vl")


@pytest.fixture(scope="session")
def processor(vl_dir: Path):
    # None: keep the tiny model's saved budget (4..16 image tokens per picture).
    return load_vl_processor(vl_dir, min_pixels=None, max_pixels=None)


@pytest.fixture(scope="session")
def vl_model(vl_dir: Path) -> torch.nn.Module:
    """Shared and read-only: tests that train load their own copy."""
    model = load_vl_model(vl_dir, torch.float32)
    model.eval()
    return model


@pytest.fixture(scope="session")
def vl_path(processor, vl_model) -> VLPolicyPath:
    return VLPolicyPath(processor, vl_model, "geometry", max_prompt_len=1024)


@pytest.fixture(scope="session")
def stop(processor) -> tuple[int, ...]:
    """End-of-response ids of the tiny model (<|im_end|>, <|endoftext|>)."""
    tok = processor.tokenizer
    return tuple(
        sorted({tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")})
    )


@pytest.fixture()
def mixed() -> list[Record]:
    return mixed_records()


@pytest.fixture(scope="session")
def make_png():
    return gradient_png


@pytest.fixture(scope="session")
def sampled(vl_path, vl_model, stop):
    """The four mixed prompts, two samples each, drawn by ``generate`` through the VL collator."""
    from mm_gmpo.rollout.base import SamplingSettings
    from mm_gmpo.rollout.hf import HFGenerateEngine

    prompts = [vl_path.build_prompt(r) for r in mixed_records()]
    engine = HFGenerateEngine(vl_model, vl_path.pad_id, batch_size=4, collate=vl_path.collate_for_generate)
    torch.manual_seed(0)
    settings = SamplingSettings(n=2, temperature=0.8, max_new_tokens=12, stop_token_ids=stop)
    return prompts, engine.generate(prompts, settings)
