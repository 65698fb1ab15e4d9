"""vLLM request building as plain functions (no vLLM needed: runs in the main environment).

What each policy path sends vLLM: one placeholder per image, images in prompt order, the
trainer's pixel budget as processor kwargs, the image limit as an engine setting; text prompts
as their token ids. The engine itself runs these requests in tests/vllm/test_vllm_vl.py.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from PIL import Image

from mm_gmpo.data.records import Record
from mm_gmpo.rollout.base import PromptInput
from mm_gmpo.rollout.vllm import (
    VLLM_EXTRA_HINT,
    TokenIdRequests,
    check_gpu_budget,
    cut_at_stop,
    request_seeds,
    require_vllm,
)
from mm_gmpo.vl.vllm_requests import QwenVLRequests, collapse_image_tokens, image_token_counts

HAS_VLLM = importlib.util.find_spec("vllm") is not None


@pytest.fixture(scope="module")
def vl(tmp_path_factory):
    pytest.importorskip("qwen_vl_utils", reason="the VL path needs qwen-vl-utils (main environment)")
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    from mm_gmpo.testing import build_tiny_qwen2_5_vl
    from mm_gmpo.vl.path import VLPolicyPath

    root = tmp_path_factory.mktemp("vl_requests")
    d = build_tiny_qwen2_5_vl(root / "m", seed=0)
    processor = AutoProcessor.from_pretrained(d)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(d)
    path = VLPolicyPath(processor, model, "geometry", 4096)
    images = []
    for i, size in enumerate([(90, 60), (40, 120)]):
        f = root / f"img{i}.png"
        Image.new("RGB", size, (30 * i, 100, 200)).save(f)
        images.append(str(f))
    record = Record(
        id="two-images", problem="<image> and <image>: which angle is larger?", answer="A", images=images
    )
    prompt = path.build_prompt(record)
    pil = prompt.multimodal["images"]  # the resized pictures the path stores beside pixel_values
    assert [im.size for im in pil] == [im.size for im in path._load_images(record, path._messages(record))]
    return path, prompt, pil


def test_vl_request_has_one_placeholder_per_image_and_the_trainers_pixel_budget(vl):
    path, prompt, pil = vl
    kwargs = {"min_pixels": path.min_pixels, "max_pixels": path.max_pixels}
    builder = path.vllm_requests()
    assert isinstance(builder, QwenVLRequests)
    assert builder.vllm_engine_kwargs() == {
        "limit_mm_per_prompt": {"image": 4},
        "mm_processor_kwargs": kwargs,
    }
    assert (
        list(builder.banned_token_ids) == path.banned_token_ids
        and path.image_token_id in path.banned_token_ids
    )
    (req,) = builder.build_vllm_requests([prompt])
    ids, sent = prompt.input_ids, req["prompt_token_ids"]
    counts = image_token_counts(prompt.multimodal["image_grid_thw"], path.merge_size)
    assert len(counts) == 2 and all(c >= 4 for c in counts)
    assert sent.count(path.image_token_id) == 2
    # everything but the image runs is untouched, and expanding each placeholder restores the ids
    assert [t for t in sent if t != path.image_token_id] == [t for t in ids if t != path.image_token_id]
    expanded, k = [], 0
    for t in sent:
        if t == path.image_token_id:
            expanded += [t] * counts[k]
            k += 1
        else:
            expanded.append(t)
    assert expanded == ids
    vision_start = path.tokenizer.convert_tokens_to_ids("<|vision_start|>")
    for pos in (i for i, t in enumerate(sent) if t == path.image_token_id):
        assert sent[pos - 1] == vision_start
    assert req["multi_modal_data"]["image"] == pil  # same pictures, prompt order
    assert req["mm_processor_kwargs"] == kwargs
    # the processor (vLLM runs the HF one) with those kwargs gives the trainer's grids again
    size = {"shortest_edge": path.min_pixels, "longest_edge": path.max_pixels}
    again = path.processor.image_processor(images=pil, return_tensors="pt", size=size)
    assert torch.equal(again["image_grid_thw"], prompt.multimodal["image_grid_thw"])


def test_vl_request_refuses_missing_images_and_mismatched_runs(vl):
    path, prompt, _ = vl
    bare = PromptInput(prompt.input_ids, {k: v for k, v in prompt.multimodal.items() if k != "images"})
    with pytest.raises(ValueError, match="images"):
        path.vllm_requests().build_request(bare)
    with pytest.raises(ValueError, match="image-token runs"):
        collapse_image_tokens([1, 9, 9, 2, 9, 3], 9, [2, 2])


def test_text_requests_refuse_images(vl):
    _, prompt, _ = vl
    assert TokenIdRequests().build_vllm_requests([PromptInput([5, 6, 7])]) == [
        {"prompt_token_ids": [5, 6, 7]}
    ]
    assert TokenIdRequests().vllm_engine_kwargs() == {}
    with pytest.raises(ValueError, match="VL path's request builder"):
        TokenIdRequests().build_vllm_requests([PromptInput([5, 6, 7]), prompt])


def test_text_request_seeds_and_stop_cut():
    assert request_seeds(None, 2, 4) == [None, None]
    seeds = request_seeds(10, 3, 4)
    children = {s + c for s in seeds for c in range(4)}  # vLLM seeds child c with seed + c
    assert len(children) == 12
    assert cut_at_stop([4, 8, 2, 8], [-1.0, -2.0, -3.0, -4.0], {8}) == ([4, 8], [-1.0, -2.0], False)
    assert cut_at_stop([4, 5], [-1.0, -2.0], {8}) == ([4, 5], [-1.0, -2.0], True)


def test_gpu_budget_and_missing_extra_errors():
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        check_gpu_budget(1.5)
    if HAS_VLLM:
        pytest.skip("vLLM is installed here; the missing-extra message cannot be observed")
    with pytest.raises(ImportError) as err:
        require_vllm()
    assert "mm-gmpo[vllm]" in str(err.value) and err.value.args[0] == VLLM_EXTRA_HINT
