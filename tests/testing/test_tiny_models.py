"""The tiny local tokenizer / Qwen2 / Qwen2.5-VL factories load and behave like real checkpoints."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import (
    AutoModelForCausalLM,
    AutoProcessor,
    AutoTokenizer,
    Qwen2_5_VLForConditionalGeneration,
)

from mm_gmpo.testing import (
    SPECIAL_TOKENS,
    build_tiny_qwen2,
    build_tiny_qwen2_5_vl,
    build_tokenizer,
    tiny_model_dir,
)


@pytest.fixture(scope="module")
def tok_dir() -> Path:
    return tiny_model_dir("tokenizer")


@pytest.fixture(scope="module")
def qwen2_dir() -> Path:
    return tiny_model_dir("qwen2")


@pytest.fixture(scope="module")
def vl_dir() -> Path:
    return tiny_model_dir("qwen2_5_vl")


def _gradient_image(width: int, height: int) -> Image.Image:
    """A real, non-constant RGB picture (constant images hide patch-order bugs)."""
    img = Image.new("RGB", (width, height))
    img.putdata([((x * 7) % 256, (y * 5) % 256, (x + y) % 256) for y in range(height) for x in range(width)])
    return img


# --------------------------------------------------------------------------- tokenizer


def test_tokenizer_specials_are_single_ids_and_text_round_trips(tok_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tok_dir)
    ids = [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]
    assert len(set(ids)) == len(SPECIAL_TOKENS)
    assert all(i is not None and i < len(tok) for i in ids)
    for t in SPECIAL_TOKENS:
        assert tok(t, add_special_tokens=False)["input_ids"] == [tok.convert_tokens_to_ids(t)]
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert 256 < len(tok) <= 2048

    samples = [
        "What is 37 + 45? The answer is \\boxed{82}.",
        "<think> 91 - 28 = 63 </think> <answer> 63 </answer>",
        "$\\frac{\\sqrt{3}}{2} \\cdot \\pi r^2$, $\\angle ABC = 90^\\circ$",
        "Ünïcödé ✓ 中文 😀\n\ttabs",
    ]
    for s in samples:
        enc = tok(s, add_special_tokens=False)["input_ids"]
        assert tok.decode(enc) == s
    # Digits are isolated (as in Qwen2): every digit is its own token.
    pieces = tok.convert_ids_to_tokens(tok("12345", add_special_tokens=False)["input_ids"])
    assert pieces == list("12345")
    # Trained merges make ordinary words shorter than their bytes.
    assert len(tok("reasoning process", add_special_tokens=False)["input_ids"]) <= 4


def test_tokenizer_is_deterministic(tmp_path: Path) -> None:
    a = build_tokenizer(tmp_path / "a") / "tokenizer.json"
    b = build_tokenizer(tmp_path / "b") / "tokenizer.json"
    assert a.read_bytes() == b.read_bytes()


def test_chat_template_round_trip(tok_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tok_dir)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2 + 3?"},
        {"role": "assistant", "content": "\\boxed{5}"},
    ]
    text = tok.apply_chat_template(messages, tokenize=False)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n"
        "<|im_start|>assistant\n\\boxed{5}<|im_end|>\n"
    )
    prompt = tok.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n")
    # Default system turn when none is given.
    no_sys = tok.apply_chat_template(messages[1:2], tokenize=False)
    assert no_sys.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
    # Tokenized form decodes back to the same text, with the markers as single special ids.
    ids = tok.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    assert tok.decode(ids) == text
    assert ids.count(tok.convert_tokens_to_ids("<|im_start|>")) == 3
    assert ids.count(tok.convert_tokens_to_ids("<|im_end|>")) == 3
    # Image parts become one <|vision_start|><|image_pad|><|vision_end|> block each.
    vl_text = tok.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Find x."}]}],
        tokenize=False,
    )
    assert "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Find x.<|im_end|>\n" in vl_text


# --------------------------------------------------------------------------- text model


def test_qwen2_same_seed_same_weights(tmp_path: Path) -> None:
    a = load_file(build_tiny_qwen2(tmp_path / "a", seed=3) / "model.safetensors")
    b = load_file(build_tiny_qwen2(tmp_path / "b", seed=3) / "model.safetensors")
    c = load_file(build_tiny_qwen2(tmp_path / "c", seed=4) / "model.safetensors")
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].numel() > 1000)


def test_qwen2_builder_leaves_global_rng_alone(tmp_path: Path) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_qwen2(tmp_path / "m", seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_qwen2_config_and_overrides(qwen2_dir: Path, tmp_path: Path) -> None:
    tok = AutoTokenizer.from_pretrained(qwen2_dir)
    model = AutoModelForCausalLM.from_pretrained(qwen2_dir)
    cfg = model.config
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert model.dtype == torch.float32
    assert cfg.vocab_size == len(tok)
    assert cfg.hidden_size // cfg.num_attention_heads == 64
    eos = {tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")}
    assert set(model.generation_config.eos_token_id) == eos
    assert set(cfg.eos_token_id) == eos
    assert model.generation_config.pad_token_id == cfg.pad_token_id == tok.pad_token_id

    bigger = AutoModelForCausalLM.from_pretrained(build_tiny_qwen2(tmp_path / "o", num_hidden_layers=3))
    assert bigger.config.num_hidden_layers == 3 and len(bigger.model.layers) == 3


def test_qwen2_generates_batched(qwen2_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(qwen2_dir, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(qwen2_dir).eval()
    prompts = [
        tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
        for q in ("What is 1 + 2?", "What is 37 + 45? Think.")
    ]
    enc = tok(prompts, return_tensors="pt", padding=True)  # input_ids: [2, prompt_len]
    assert enc["attention_mask"][0, 0] == 0  # left padded
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=6, do_sample=False)  # [2, prompt_len + <=6]
        again = model.generate(**enc, max_new_tokens=6, do_sample=False)
    assert out.shape[0] == 2 and enc["input_ids"].shape[1] < out.shape[1] <= enc["input_ids"].shape[1] + 6
    assert torch.equal(out, again)
    assert int(out.max()) < len(tok)


# --------------------------------------------------------------------------- VL model


def test_vl_same_seed_same_weights(tmp_path: Path) -> None:
    a = load_file(build_tiny_qwen2_5_vl(tmp_path / "a", seed=1) / "model.safetensors")
    b = load_file(build_tiny_qwen2_5_vl(tmp_path / "b", seed=1) / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any("visual" in k for k in a)


def test_vl_config_token_ids(vl_dir: Path) -> None:
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(vl_dir)
    proc = AutoProcessor.from_pretrained(vl_dir)
    tok = proc.tokenizer
    cfg = model.config
    assert cfg.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>") == proc.image_token_id
    assert cfg.video_token_id == tok.convert_tokens_to_ids("<|video_pad|>")
    assert cfg.vision_start_token_id == tok.convert_tokens_to_ids("<|vision_start|>")
    assert cfg.vision_end_token_id == tok.convert_tokens_to_ids("<|vision_end|>")
    assert cfg.text_config.vocab_size == len(tok)
    assert cfg.vision_config.out_hidden_size == cfg.text_config.hidden_size
    head_dim = cfg.text_config.hidden_size // cfg.text_config.num_attention_heads
    assert sum(cfg.text_config.rope_parameters["mrope_section"]) * 2 == head_dim == 64
    assert proc.image_processor.merge_size == 2 and proc.image_processor.patch_size == 14


def test_vl_image_through_qwen_vl_utils_forward_and_generate(vl_dir: Path) -> None:
    from qwen_vl_utils import process_vision_info

    proc = AutoProcessor.from_pretrained(vl_dir)
    proc.tokenizer.padding_side = "left"
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(vl_dir).eval()
    conversations = [
        [
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": _gradient_image(120, 75)},
                    {"type": "text", "text": "Find x."},
                ],
            }
        ],
        [
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": _gradient_image(60, 60)},
                    {"type": "text", "text": "What is the area of the circle?"},
                ],
            }
        ],
    ]
    texts = [proc.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations]
    images, videos = process_vision_info(conversations)
    assert videos is None and len(images) == 2
    batch = proc(text=texts, images=images, return_tensors="pt", padding=True)
    grid = batch["image_grid_thw"]  # [n_images, 3] (t, h, w) in patches
    merge = proc.image_processor.merge_size
    n_pad = (batch["input_ids"] == model.config.image_token_id).sum(dim=1)  # [2]
    assert n_pad.tolist() == (grid.prod(dim=1) // merge**2).tolist()
    assert batch["pixel_values"].shape[0] == int(grid.prod(dim=1).sum())  # [n_patches, 3*2*14*14]
    assert all(4 <= n <= 16 for n in n_pad.tolist())  # tiny min/max pixels
    assert "mm_token_type_ids" in batch

    with torch.no_grad():
        logits = model(**batch).logits  # [2, seq, vocab]
        assert logits.shape == (*batch["input_ids"].shape, model.config.text_config.vocab_size)
        # mRoPE matters: without mm_token_type_ids the model falls back to 1-D positions.
        no_mrope = {k: v for k, v in batch.items() if k != "mm_token_type_ids"}
        logits_1d = model(**no_mrope).logits
        assert not torch.allclose(logits, logits_1d)
        out = model.generate(**batch, max_new_tokens=4, do_sample=False)  # [2, seq + <=4]
    assert out.shape[0] == 2 and out.shape[1] > batch["input_ids"].shape[1]
    assert torch.equal(out[:, : batch["input_ids"].shape[1]], batch["input_ids"])


# --------------------------------------------------------------------------- helpers


def test_tiny_model_dir_caches_and_rejects_unknown() -> None:
    assert tiny_model_dir("tokenizer") == tiny_model_dir("tokenizer")
    assert tiny_model_dir("tokenizer", seed=1) != tiny_model_dir("tokenizer", seed=0)
    with pytest.raises(ValueError, match="qwen2_5_vl"):
        tiny_model_dir("llama")  # type: ignore[arg-type]


def test_build_all_three_timing_report(tmp_path: Path, record_property) -> None:
    """Reports the build time (target < 5 s on CPU); deliberately not asserted."""
    t0 = time.perf_counter()
    build_tokenizer(tmp_path / "tok")
    t1 = time.perf_counter()
    build_tiny_qwen2(tmp_path / "q2")
    t2 = time.perf_counter()
    build_tiny_qwen2_5_vl(tmp_path / "vl")
    t3 = time.perf_counter()
    report = (
        f"tokenizer {t1 - t0:.2f}s, qwen2 {t2 - t1:.2f}s, qwen2_5_vl {t3 - t2:.2f}s, total {t3 - t0:.2f}s"
    )
    record_property("tiny_build_seconds", report)
    print(f"\n[tiny model build] {report}")
    assert (tmp_path / "vl" / "model.safetensors").exists()
