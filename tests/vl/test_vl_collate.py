"""Image-aware collation: generate inputs, micro-batches cut from a rollout, refusals."""

from __future__ import annotations

import pytest
import torch

from mm_gmpo.data.records import Record
from mm_gmpo.rollout.base import Rollout, SamplingSettings
from mm_gmpo.rollout.hf import HFGenerateEngine
from mm_gmpo.vl.collate import IMAGE_TYPE, split_images
from mm_gmpo.vl.path import VLPolicyPath


def test_generate_inputs_left_padded_with_images_in_prompt_order(vl_path, mixed) -> None:
    prompts = [vl_path.build_prompt(r) for r in mixed]
    batch = vl_path.collate_for_generate(prompts, vl_path.pad_id)
    ids, attn = batch["input_ids"], batch["attention_mask"]  # [4, P]
    width = ids.shape[1]
    for row, p in enumerate(prompts):
        n = len(p.input_ids)
        assert ids[row, width - n :].tolist() == p.input_ids  # left padding: prompt ends at column P
        assert attn[row, : width - n].sum() == 0 and attn[row, width - n :].all()
    expected_pixels = torch.cat([p.multimodal["pixel_values"] for p in prompts])  # [sum patches, D]
    assert torch.equal(batch["pixel_values"], expected_pixels)
    assert batch["image_grid_thw"].tolist() == [
        g for p in prompts for g in p.multimodal["image_grid_thw"].tolist()
    ]
    types = batch["mm_token_type_ids"]  # [4, P]
    assert torch.equal(types == IMAGE_TYPE, ids == vl_path.image_token_id)
    assert int((types == IMAGE_TYPE).sum()) * 4 == int(batch["image_grid_thw"].prod(dim=1).sum())


def test_micro_batch_keeps_each_samples_images(sampled, vl_path, vl_model) -> None:
    """Rows cut out of the rollout (any order) carry exactly their own images and score the same."""
    _, rollout = sampled
    full = vl_path.collate(rollout, list(range(len(rollout))))
    rows = [5, 2, 3]  # prompt 2, prompt 1 (two images), prompt 1
    micro = vl_path.collate(rollout, rows)
    per_sample = split_images(micro.extra)
    assert micro.extra["image_counts"].tolist() == [1, 2, 2]
    for got, r in zip(per_sample, rows):
        assert torch.equal(got["pixel_values"], rollout.multimodal[r]["pixel_values"])
        assert torch.equal(got["image_grid_thw"], rollout.multimodal[r]["image_grid_thw"])
    with torch.no_grad():
        logp_full, _ = vl_path.forward(vl_model, full, 0.8, with_entropy=False)  # [8, R]
        logp_micro, _ = vl_path.forward(vl_model, micro, 0.8, with_entropy=False)  # [3, R']
    for j, r in enumerate(rows):
        n = len(rollout.response_ids[r])
        assert torch.allclose(logp_micro[j, :n], logp_full[r, :n], atol=1e-5)


def test_collate_refuses_images_that_do_not_match_the_tokens(sampled, vl_path) -> None:
    """Swapping a row's images for another prompt's is caught before the model sees it."""
    _, rollout = sampled
    bad = Rollout(
        *([getattr(rollout, f)[r] for r in (0, 2)] for f in ("prompt_index", "prompt_ids", "response_ids")),
        [rollout.sampler_logp[r] for r in (0, 2)],
        [rollout.truncated[r] for r in (0, 2)],
        [rollout.multimodal[r] for r in (0, 2)],
    )
    bad.multimodal = [bad.multimodal[1], bad.multimodal[1]]  # row 0 now carries prompt 1's two images
    with pytest.raises(ValueError, match=r"row 0: its prompt has \d+ image tokens.*mixed up"):
        vl_path.collate(bad, [0, 1])


def test_text_only_records_work_without_image_tensors(vl_path, vl_model, stop) -> None:
    prompts = [vl_path.build_prompt(Record(f"t{i}", f"What is {i} + 1?", str(i + 1))) for i in range(3)]
    assert all(p.multimodal is None for p in prompts)
    gen = vl_path.collate_for_generate(prompts, vl_path.pad_id)
    assert "pixel_values" not in gen and not gen["mm_token_type_ids"].any()
    engine = HFGenerateEngine(vl_model, vl_path.pad_id, collate=vl_path.collate_for_generate)
    torch.manual_seed(0)
    rollout = engine.generate(prompts, SamplingSettings(n=2, max_new_tokens=5, stop_token_ids=stop))
    batch = vl_path.collate(rollout, list(range(len(rollout))))
    assert batch.extra == {}
    assert torch.equal(batch.position_ids[0], batch.position_ids[2])  # text only: 3 equal rows
    with torch.no_grad():
        logp, _ = vl_path.forward(vl_model, batch, 1.0, with_entropy=False)
    for i, resp in enumerate(rollout.response_ids):
        assert torch.allclose(logp[i, : len(resp)], torch.tensor(rollout.sampler_logp[i]), atol=1e-5)


def test_sampled_image_placeholder_in_a_response_is_plain_text(processor, vl_model, stop, mixed) -> None:
    """A response that sampled <|image_pad|> still collates and matches the sampler after it.

    During decoding such a token was a plain embedding at a text position; treating it as an
    image slot in training is the "Image features and image tokens do not match" crash. The
    first response token is forced to <|image_pad|> (then sampling is free), so every row
    holds one.
    """
    vl_path = VLPolicyPath(processor, vl_model, "geometry", 1024, ban_vision_tokens=False)
    prompts = [vl_path.build_prompt(r) for r in mixed[:2]]
    inputs = vl_path.collate_for_generate(prompts, vl_path.pad_id)
    width = inputs["input_ids"].shape[1]
    everything = list(range(vl_model.config.text_config.vocab_size))

    def force_placeholder_first(batch_id: int, ids: torch.Tensor) -> list[int]:
        return [vl_path.image_token_id] if ids.shape[-1] == width else everything

    torch.manual_seed(3)
    config = vl_model.generation_config
    saved, config.suppress_tokens = config.suppress_tokens, None  # the shared model bans them
    try:
        out = vl_model.generate(
            **inputs,
            do_sample=True,
            temperature=1.0,
            top_k=0,
            max_new_tokens=6,
            num_return_sequences=2,
            prefix_allowed_tokens_fn=force_placeholder_first,
            output_scores=True,
            return_dict_in_generate=True,
            eos_token_id=list(stop),
            pad_token_id=vl_path.pad_id,
        )
    finally:
        config.suppress_tokens = saved
    new = out.sequences[:, width:]  # [4, 6]
    step_logp = torch.stack(
        [
            torch.log_softmax(sc.float(), -1).gather(-1, new[:, t : t + 1]).squeeze(-1)
            for t, sc in enumerate(out.scores)
        ],
        dim=1,
    )  # [4, 6]
    assert (new[:, 0] == vl_path.image_token_id).all()
    rows = list(range(4))
    rollout = Rollout(
        [r // 2 for r in rows],
        [prompts[r // 2].input_ids for r in rows],
        new.tolist(),
        step_logp.tolist(),
        [False] * 4,
        [prompts[r // 2].multimodal for r in rows],
    )
    batch = vl_path.collate(rollout, rows)
    with torch.no_grad():
        logp, _ = vl_path.forward(vl_model, batch, 1.0, with_entropy=False)  # [4, 6]
    # Position 0 was forced (sampler log-prob 0); everything after it must match.
    assert torch.allclose(logp[:, 1:], step_logp[:, 1:], atol=1e-5)


def test_vision_tokens_are_banned_in_sampling_and_in_the_trainer(processor, vl_model, stop) -> None:
    """With the ban (the default) generate never emits a placeholder; without it, it does.

    The trainer gives a banned target probability ~0 with a finite entropy, so sampler and
    trainer stay on one distribution.
    """
    records = [Record(f"t{i}", f"Say something about {i}.", "0") for i in range(4)]
    hot = SamplingSettings(n=4, temperature=3.0, max_new_tokens=24, stop_token_ids=stop)

    c = vl_model.config
    vision = {c.image_token_id, c.video_token_id, c.vision_start_token_id, c.vision_end_token_id}
    vision.add(processor.tokenizer.convert_tokens_to_ids("<|vision_pad|>"))

    def placeholders_sampled(ban: bool) -> int:
        config = vl_model.generation_config
        saved, config.suppress_tokens = config.suppress_tokens, None
        try:
            path = VLPolicyPath(processor, vl_model, "geometry", 1024, ban_vision_tokens=ban)
            assert set(path.banned_token_ids) == (vision if ban else set())
            engine = HFGenerateEngine(vl_model, path.pad_id, collate=path.collate_for_generate)
            torch.manual_seed(3)
            rollout = engine.generate([path.build_prompt(r) for r in records], hot)
            return sum(t in vision for r in rollout.response_ids for t in r)
        finally:
            config.suppress_tokens = saved

    assert placeholders_sampled(ban=False) > 0
    assert placeholders_sampled(ban=True) == 0

    path = VLPolicyPath(processor, vl_model, "geometry", 1024)
    prompt = path.build_prompt(records[0]).input_ids
    batch = path.collate(Rollout([0], [prompt], [[15]], [[0.0]], [False], [None]), [0])  # one text token
    batch.response_ids[0, 0] = path.banned_token_ids[-1]  # score a banned id as the target
    with torch.no_grad():
        logp, entropy = path.forward(vl_model, batch, 1.0)
    assert float(logp[0, 0]) < -1e20 and torch.isfinite(entropy).all()
