"""Bad images and over-long prompts: a clear error naming the record, or a counted skip; the run goes on."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from mm_gmpo.data.records import Record
from mm_gmpo.rollout.hf import HFGenerateEngine
from mm_gmpo.text.path import BadRecordError
from mm_gmpo.train.config import load_config
from mm_gmpo.train.engine import OptimSettings, TorchEngine
from mm_gmpo.train.loop import Trainer
from mm_gmpo.vl.path import BadImageError, VLPolicyPath


def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def noisy_jpeg() -> bytes:
    arr = np.random.default_rng(0).integers(0, 256, size=(64, 96, 3), dtype=np.uint8)
    return encode(Image.fromarray(arr), "JPEG", quality=90)


def bad_cases(tmp_path) -> dict[str, tuple[object, str]]:
    """record id -> (image reference, reason the path must report)."""
    return {
        "zero-byte": (b"", "empty"),
        "truncated-jpeg": (noisy_jpeg()[:600], "unreadable"),
        "one-pixel": (encode(Image.new("RGB", (1, 1), (9, 9, 9))), "too_small"),
        # 1-bit so the 100-megapixel PNG is small to build; refused from its header alone.
        "hundred-megapixel": (encode(Image.new("1", (10_000, 10_000))), "too_large"),
        "missing-file": (str(tmp_path / "no_such_picture.png"), "missing"),
        "not-an-image": (b"%PDF-1.4 this is not a picture", "unreadable"),
    }


def awkward_modes() -> dict[str, bytes]:
    """Modes that must load (converted to RGB), not be refused."""
    gray16 = Image.fromarray((np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20).astype(np.uint16))
    la = Image.new("LA", (64, 48), (120, 0))  # fully transparent grey
    return {
        "palette": encode(Image.new("RGB", (64, 48), (200, 10, 10)).convert("P")),
        "la": encode(la),
        "cmyk": encode(Image.new("CMYK", (64, 48), (0, 255, 255, 0)), "JPEG"),
        "gray16": encode(gray16),
    }


@pytest.fixture()
def fresh_path(processor, vl_model) -> VLPolicyPath:
    return VLPolicyPath(processor, vl_model, "geometry", max_prompt_len=1024)


def test_each_bad_image_is_refused_naming_the_record(fresh_path, tmp_path) -> None:
    for rid, (ref, reason) in bad_cases(tmp_path).items():
        record = Record(rid, "How many sides?", "3", images=[ref])
        with pytest.raises(BadImageError, match=rid) as info:
            fresh_path.build_prompt(record)
        assert info.value.image_reason == reason, rid
        assert info.value.index == 0 and isinstance(info.value, ValueError)
    assert fresh_path.bad_records == {f"image:{r}": 1 for _, r in bad_cases(tmp_path).values()} | {
        "image:unreadable": 2
    }


def test_second_image_failing_is_reported_by_index(fresh_path, make_png) -> None:
    record = Record("two", "Compare <image> with <image>.", "A", images=[make_png(64, 64), b""])
    with pytest.raises(BadImageError, match=r"record 'two': image 1") as info:
        fresh_path.build_prompt(record)
    assert info.value.image_reason == "empty"


def test_awkward_modes_load_as_rgb(fresh_path) -> None:
    for name, data in awkward_modes().items():
        prompt = fresh_path.build_prompt(Record(name, "Describe it.", "x", images=[data]))
        grid = prompt.multimodal["image_grid_thw"]  # [1, 3]
        pixels = prompt.multimodal["pixel_values"]  # [patches, 3*2*14*14]
        assert grid.shape == (1, 3) and pixels.shape[0] == int(grid.prod()), name
        assert pixels.shape[1] == 3 * 2 * 14 * 14 and torch.isfinite(pixels).all(), name


def test_transparent_la_image_is_composited_on_white(fresh_path) -> None:
    """A transparent diagram must not turn black: same pixels as a plain white picture."""
    la = fresh_path.build_prompt(Record("la", "Q", "x", images=[awkward_modes()["la"]]))
    white = fresh_path.build_prompt(
        Record("w", "Q", "x", images=[encode(Image.new("RGB", (64, 48), "white"))])
    )
    assert torch.allclose(la.multimodal["pixel_values"], white.multimodal["pixel_values"])


def test_prompt_over_the_limit_is_refused_not_truncated(processor, vl_model, make_png) -> None:
    path = VLPolicyPath(processor, vl_model, "geometry", max_prompt_len=40)
    with pytest.raises(BadRecordError, match=r"record 'long'.*image tokens.*max_prompt_len=40"):
        path.build_prompt(Record("long", "How many sides?", "3", images=[make_png(112, 112)]))
    assert path.bad_records["prompt_too_long"] == 1


def test_more_images_than_data_max_images_per_prompt_is_a_counted_bad_record(tmp_path, vl_dir, make_png):
    from mm_gmpo.vl.build import build_parts

    cfg = load_config(
        None,
        [
            "modality=vl",
            f"train.output_dir={tmp_path}",
            "data.max_images_per_prompt=2",
            "data.template=geometry",
        ],
    )
    path = build_parts(cfg, vl_dir).path
    two = Record("two", "Compare <image> and <image>.", "3", images=[make_png(56, 56), make_png(84, 56)])
    three = Record("three", "<image> <image> <image>?", "3", images=[make_png(56, 56)] * 3)
    assert len(path.build_prompt(two).multimodal["image_grid_thw"]) == 2
    with pytest.raises(BadRecordError, match=r"record 'three': 3 images, over data.max_images_per_prompt=2"):
        path.build_prompt(three)
    assert path.bad_records["too_many_images"] == 1
    # the same limit is what the vLLM engine is started with (limit_mm_per_prompt)
    assert path.vllm_requests().vllm_engine_kwargs()["limit_mm_per_prompt"] == {"image": 2}


def test_literal_image_token_in_text_is_refused(fresh_path, make_png) -> None:
    """A stray <|image_pad|> in the question would mean one image slot too many at train time."""
    record = Record("stray", "What is <|image_pad|> here?", "3", images=[make_png(56, 56)])
    with pytest.raises(BadRecordError, match=r"record .stray..*image_pad"):
        fresh_path.build_prompt(record)


def test_placeholder_count_mismatch_names_the_record(fresh_path, make_png) -> None:
    record = Record("slots", "Compare <image> and <image>.", "3", images=[make_png(56, 56)])
    with pytest.raises(BadRecordError, match=r"record 'slots'.*placeholder"):
        fresh_path.build_prompt(record)


def _trainer(tmp_path, path, model, records, on_bad: str) -> Trainer:
    cfg = load_config(
        None,
        [
            "modality=vl",
            f"train.output_dir={tmp_path / 'run'}",
            f"data.on_bad_record={on_bad}",
            f"train.prompts_per_step={len(records)}",  # one step sees every record
            "rollout.n=2",
            "rollout.max_new_tokens=3",
        ],
    )
    return Trainer(
        cfg,
        path=path,
        engine=TorchEngine(model, OptimSettings(lr=1e-3)),
        rollout_engine=HFGenerateEngine(model, path.pad_id, collate=path.collate_for_generate),
        score=lambda texts, recs, trunc: ([float(len(t) % 2) for t in texts], [0.0] * len(texts), {}),
        train_records=records,
        stop_token_ids=[486],
    )


def test_run_goes_on_skipping_and_counting_or_stops_naming_the_record(
    tmp_path, processor, vl_dir, make_png
) -> None:
    from mm_gmpo.vl.model import load_vl_model

    model = load_vl_model(vl_dir)  # this test trains: its own copy
    path = VLPolicyPath(processor, model, "geometry", max_prompt_len=1024)
    good = [Record(f"ok{i}", "How many sides?", "3", images=[make_png(56 + 28 * i, 56)]) for i in range(2)]
    bad = [Record(rid, "How many sides?", "3", images=[ref]) for rid, (ref, _) in bad_cases(tmp_path).items()]
    skip = _trainer(tmp_path, path, model, good + bad, "skip")
    metrics = skip.rl_step()
    assert skip.state.skipped_records == len(bad) and metrics["skipped_records"] == len(bad)
    assert metrics["rows_trained"] == 4  # the two good prompts, two samples each
    assert skip.evaluate(good + bad, max_new_tokens=2)["eval_skipped"] == len(bad)
    stop = _trainer(tmp_path, path, model, good + bad, "error")
    names = "|".join(r.id for r in bad)
    with pytest.raises(BadRecordError, match=rf"record '({names})'"):
        stop.rl_step()


def test_prompts_are_cached_per_record_object_within_the_budget(processor, vl_model, make_png) -> None:
    a = Record("a", "How many sides?", "3", images=[make_png(56, 56, 1)])
    b = Record("b", "How many sides?", "4", images=[make_png(84, 56, 2)])
    probe = VLPolicyPath(processor, vl_model, cache_mb=0)
    one = probe.build_prompt(a).multimodal["pixel_values"].nbytes
    assert probe.build_prompt(a) is not probe.build_prompt(a)  # cache off: rebuilt each time

    path = VLPolicyPath(processor, vl_model, cache_mb=1.5 * one / 2**20)  # room for one prompt
    first = path.build_prompt(a)
    assert path.build_prompt(a) is first
    path.build_prompt(b)  # over the budget: the least recently used (a) goes
    assert path.build_prompt(a) is not first
    twin = Record("a", "How many sides?", "3", images=[make_png(56, 56, 9)])  # same id, other picture
    assert not torch.equal(
        path.build_prompt(twin).multimodal["pixel_values"], first.multimodal["pixel_values"]
    )
    broken = Record("broken", "Q", "1", images=[b""])
    for _ in range(2):
        with pytest.raises(BadImageError):
            path.build_prompt(broken)
    assert path.bad_records["image:empty"] == 2  # refused records are never cached
