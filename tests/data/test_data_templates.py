"""Prompt templates produce the exact prompts of the paper's recipes."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from transformers import AutoProcessor, AutoTokenizer

from mm_gmpo.data import Record, apply_template, get_template, render_prompt
from mm_gmpo.data.templates import GEOMETRY_SUFFIX, QWEN_MATH_SYSTEM, TEMPLATES
from mm_gmpo.testing import R1_DISTILL_STYLE_CHAT_TEMPLATE, tiny_model_dir


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(tiny_model_dir("tokenizer"))


def _png_bytes(w: int = 64, h: int = 48) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (10, 200, 30)).save(buf, format="PNG")
    return buf.getvalue()


def test_qwen_math_exact_string_through_chat_template(tokenizer) -> None:
    rec = Record(id="1", problem="What is $2 + 3$?", answer="5")
    prompt = apply_template("qwen_math", rec, tokenizer)
    assert prompt == (
        "<|im_start|>system\n"
        "Please reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n"
        "<|im_start|>user\nWhat is $2 + 3$?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    msgs = get_template("qwen_math").build(rec.problem)
    assert msgs == [
        {"role": "system", "content": QWEN_MATH_SYSTEM},
        {"role": "user", "content": rec.problem},
    ]


def test_r1_and_none_are_plain_text() -> None:
    rec = Record(id="1", problem="Find $x$ if $x + 1 = 3$.", answer="2")
    r1 = apply_template("r1", rec)
    assert r1 == (
        "A conversation between User and Assistant. The User asks a question, and the Assistant "
        "solves it. The Assistant first thinks about the reasoning process in the mind and then "
        "provides the User with the answer. The reasoning process is enclosed within <think> </think> "
        "and answer is enclosed within <answer> </answer> tags, respectively, i.e., <think> reasoning "
        "process here </think> <answer> answer here </answer>.\n"
        "User: Find $x$ if $x + 1 = 3$.\nAssistant: <think>"
    )
    assert get_template("r1").kind == "text"
    assert apply_template("none", rec) == rec.problem
    # Braces in the question must not be taken as format fields.
    assert "User: {a} \\boxed{b}\n" in apply_template(
        "r1", Record(id="2", problem="{a} \\boxed{b}", answer="1")
    )


def test_geometry_messages_images_first_then_question_and_suffix() -> None:
    msgs = get_template("geometry").build("  Find x.  ", [_png_bytes()])
    assert len(msgs) == 1 and msgs[0]["role"] == "user"
    parts = msgs[0]["content"]
    assert [p["type"] for p in parts] == ["image", "text"]
    assert isinstance(parts[0]["image"], Image.Image) and parts[0]["image"].size == (64, 48)
    assert parts[1]["text"] == f"Find x. {GEOMETRY_SUFFIX}"
    assert GEOMETRY_SUFFIX.startswith("You FIRST think") and GEOMETRY_SUFFIX.endswith("put in \\boxed{}.")


def test_geometry_placeholders_place_images(tmp_path) -> None:
    path = tmp_path / "fig.png"
    path.write_bytes(_png_bytes(40, 40))
    pil = Image.new("RGB", (30, 30))
    parts = get_template("geometry").build("Compare <image> and <image>.", [str(path), pil])[0]["content"]
    assert [p["type"] for p in parts] == ["text", "image", "text", "image", "text"]
    assert parts[0]["text"] == "Compare "
    assert parts[1]["image"].size == (40, 40)  # path decoded
    assert parts[3]["image"] is pil  # PIL passes through
    assert parts[4]["text"] == f". {GEOMETRY_SUFFIX}"
    with pytest.raises(ValueError, match="2 <image> placeholder"):
        get_template("geometry").build("Compare <image> and <image>.", [pil])


def test_geometry_renders_vision_tokens_with_tiny_processor() -> None:
    proc = AutoProcessor.from_pretrained(tiny_model_dir("qwen2_5_vl"))
    rec = Record(id="g", problem="Find the angle.", answer="30", images=[_png_bytes()])
    text = apply_template("geometry", rec, proc)
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
    assert (
        f"<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Find the angle. {GEOMETRY_SUFFIX}"
        in text
    )
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\n")


def test_r1_distill_is_one_user_turn_through_the_models_own_template(tokenizer) -> None:
    """No system turn and the directive in the user turn; the tokenizer's template, not the
    prompt template, opens the assistant turn, so a template that starts <think> is honoured."""
    rec = Record(id="1", problem="What is $2 + 3$?", answer="5")
    msgs = get_template("r1_distill").build(rec.problem)
    assert msgs == [{"role": "user", "content": f"What is $2 + 3$?\n{QWEN_MATH_SYSTEM}"}]
    think = AutoTokenizer.from_pretrained(tiny_model_dir("tokenizer"))
    think.chat_template = R1_DISTILL_STYLE_CHAT_TEMPLATE
    assert apply_template("r1_distill", rec, think) == (
        "<|User|>What is $2 + 3$?\n"
        "Please reason step by step, and put your final answer within \\boxed{}."
        "<|Assistant|><think>\n"
    )
    # the same template under the Qwen-style chat format: the tokenizer decides the wrapping
    assert apply_template("r1_distill", rec, tokenizer).endswith(
        "\\boxed{}.<|im_end|>\n<|im_start|>assistant\n"
    )
    with pytest.raises(ValueError, match="pass a tokenizer"):
        apply_template("r1_distill", rec)


def test_registry_errors() -> None:
    assert set(TEMPLATES) == {"qwen_math", "r1_distill", "r1", "none", "geometry", "vl_short"}
    with pytest.raises(ValueError, match="geometry, none, qwen_math, r1, r1_distill, vl_short"):
        get_template("qwen-math")
    with pytest.raises(ValueError, match="text-only"):
        get_template("qwen_math").build("Find x.", [_png_bytes()])
    with pytest.raises(ValueError, match="pass a tokenizer"):
        apply_template("qwen_math", Record(id="1", problem="p", answer="a"))
    assert render_prompt("already a string", tokenizer=None) == "already a string"
