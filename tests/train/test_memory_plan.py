"""The dry run's per-GPU memory plan: its parts against DeepSpeed's estimators and against
measured tensor bytes of tiny models, the knobs that shrink each part, and the CLI verdict."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
import torch
import yaml

from mm_gmpo.cli import main
from mm_gmpo.testing import tiny_qwen2_5_vl_config, tiny_qwen2_config
from mm_gmpo.testing.memory import LiveTensorBytes, SavedTensorBytes
from mm_gmpo.train.config import load_config
from mm_gmpo.train.memory_plan import (
    GIB,
    PAPER_MODELS,
    layer_saved_bytes_per_token,
    model_shape,
    plan_memory,
    render_plan,
    shape_from_hf_config,
    vision_activation_bytes,
)

REPO = Path(__file__).resolve().parents[2]
TEXT_RECIPE = REPO / "configs" / "paper_text_gmpo.yaml"
VL_RECIPE = REPO / "configs" / "paper_vl_gmpo_geo3k.yaml"


def recipe(path: Path, *overrides: str):
    return load_config(path, list(overrides))


# ---------------------------------------------------------------- model shapes and states


def test_paper_model_table_matches_the_transformers_models() -> None:
    """Parameter counts of the built-in shapes equal the real architectures (built on meta)."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    for name, s in PAPER_MODELS.items():
        text = dict(
            hidden_size=s.hidden,
            intermediate_size=s.intermediate,
            num_hidden_layers=s.layers,
            num_attention_heads=s.heads,
            num_key_value_heads=s.kv_heads,
            vocab_size=s.vocab,
            tie_word_embeddings=s.tied_embeddings,
        )
        with torch.device("meta"):
            if s.vision is None:
                model = Qwen2ForCausalLM(Qwen2Config(**text))
            else:
                v = s.vision
                vision = dict(
                    depth=v.depth,
                    hidden_size=v.hidden,
                    intermediate_size=v.intermediate,
                    num_heads=v.heads,
                    out_hidden_size=v.out_hidden,
                )
                config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False)
                model = Qwen2_5_VLForConditionalGeneration(config)
        count = sum({id(p): p.numel() for p in model.parameters()}.values())
        assert s.params() == count, name
    assert PAPER_MODELS["Qwen/Qwen2.5-Math-7B"].params() == 7_615_616_512


def test_shapes_from_tiny_builders_and_local_config_json(tmp_path: Path) -> None:
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2ForCausalLM

    shape, why = model_shape("tiny:qwen2", {"hidden_size": 192, "num_hidden_layers": 3})
    assert why == "" and (shape.hidden, shape.layers, shape.tied_embeddings) == (192, 3, True)
    config = tiny_qwen2_config(hidden_size=192, num_hidden_layers=3)
    assert shape.params() == sum(p.numel() for p in Qwen2ForCausalLM(config).parameters())

    vl, _ = model_shape("tiny:qwen2_5_vl")
    vl_model = Qwen2_5_VLForConditionalGeneration(tiny_qwen2_5_vl_config())
    assert vl.vision is not None and vl.params() == sum(p.numel() for p in vl_model.parameters())

    config.save_pretrained(tmp_path)  # a local model directory: its config.json
    local, _ = model_shape(str(tmp_path))
    assert (local.hidden, local.layers, local.vocab) == (192, 3, shape.vocab)
    assert str(tmp_path / "config.json") in local.source

    missing, why = model_shape("someone/unknown-model-7B")
    assert missing is None and "built-in table" in why


@pytest.mark.parametrize(("stage", "offload"), [(2, False), (2, True), (3, False), (3, True)])
def test_model_states_are_deepspeeds_estimates(stage: int, offload: bool) -> None:
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    cfg = recipe(TEXT_RECIPE, f"train.zero_stage={stage}", f"train.offload={str(offload).lower()}")
    row = plan_memory(cfg, world=8).row("model states")
    shape = PAPER_MODELS["Qwen/Qwen2.5-Math-7B"]
    if stage == 2:
        _, expected = estimate_zero2_model_states_mem_needs(
            shape.params(), num_gpus_per_node=8, num_nodes=1, cpu_offload=offload
        )
    else:
        _, expected, _ = estimate_zero3_model_states_mem_needs(
            shape.params(),
            shape.largest_layer_params(),
            num_gpus_per_node=8,
            num_nodes=1,
            cpu_offload=offload,
            cpu_offload_params=False,
        )
    assert row.nbytes == expected
    assert f"DeepSpeed estimate_zero{stage}_model_states_mem_needs" in row.how


def test_without_deepspeed_the_closed_form_gives_the_same_states(monkeypatch: pytest.MonkeyPatch) -> None:
    with_ds = {
        s: plan_memory(recipe(TEXT_RECIPE, f"train.zero_stage={s}"), 8).row("model states") for s in (2, 3)
    }
    for name in ("deepspeed", "deepspeed.runtime.zero.stage3", "deepspeed.runtime.zero.stage_1_and_2"):
        monkeypatch.setitem(sys.modules, name, None)  # importing them now fails
    for stage, row in with_ds.items():
        fallback = plan_memory(recipe(TEXT_RECIPE, f"train.zero_stage={stage}"), 8).row("model states")
        assert "DeepSpeed not importable" in fallback.how
        assert fallback.nbytes == pytest.approx(row.nbytes, abs=8)


def test_a_frozen_vision_tower_has_no_optimizer_states() -> None:
    trained = plan_memory(recipe(VL_RECIPE), 8).row("model states").nbytes
    frozen = plan_memory(recipe(VL_RECIPE, "model.freeze_vision_tower=true"), 8).row("model states").nbytes
    vision = PAPER_MODELS["Qwen/Qwen2.5-VL-7B-Instruct"].vision_params()
    assert trained - frozen == pytest.approx(18 * vision / 8, abs=8)  # only its 16-bit weights stay


def test_lora_plans_optimizer_states_for_the_adapters_only() -> None:
    full = plan_memory(recipe(TEXT_RECIPE), 8).row("model states")
    lora = plan_memory(recipe(TEXT_RECIPE, "model.lora_rank=16"), 8).row("model states")
    shape = PAPER_MODELS["Qwen/Qwen2.5-Math-7B"]
    adapters = shape.lora_params(16)
    assert 30e6 < adapters < 50e6  # rank 16 on q/k/v/o/gate/up/down of 28 layers: 40.4M
    assert "LoRA rank 16" in lora.how
    assert lora.nbytes < full.nbytes / 2  # no full gradients or Adam states...
    assert lora.nbytes == pytest.approx(2 * shape.params(), rel=0.02)  # ...little beyond the bf16 weights


# ---------------------------------------------------------------- the knobs act on their parts


def test_checkpointing_shrinks_the_activation_term() -> None:
    on = plan_memory(recipe(TEXT_RECIPE, "model.gradient_checkpointing=true"), 8).row("activations").nbytes
    off = plan_memory(recipe(TEXT_RECIPE, "model.gradient_checkpointing=false"), 8).row("activations").nbytes
    assert off > 80 * GIB  # the 7B's 16k-token micro-batch: what made the recipe not fit
    assert on < off / 10


def test_logit_chunk_shrinks_the_logprob_term() -> None:
    fixed = ("train.micro_batch_tokens=0", "train.micro_batch_size=4")
    full = plan_memory(recipe(TEXT_RECIPE, *fixed, "train.logit_chunk=0"), 8).row("log-probs").nbytes
    chunked = plan_memory(recipe(TEXT_RECIPE, *fixed, "train.logit_chunk=256"), 8).row("log-probs").nbytes
    vocab = PAPER_MODELS["Qwen/Qwen2.5-Math-7B"].vocab
    assert full == 4 * 3000 * vocab * 18  # bf16 logits + fp32 copy, log-softmax, exp, product
    assert chunked == 256 * vocab * 10  # one chunk of the flattened tokens: logits, fp32 copy, softmax
    assert chunked < full / 20


def test_token_budget_sets_the_micro_batch() -> None:
    small = plan_memory(recipe(TEXT_RECIPE, "train.micro_batch_tokens=8192"), 8)
    large = plan_memory(recipe(TEXT_RECIPE, "train.micro_batch_tokens=32768"), 8)
    assert small.micro_batch.tokens == 8192 and large.micro_batch.tokens == 32768
    assert large.row("activations").nbytes == pytest.approx(4 * small.row("activations").nbytes, rel=1e-9)
    # a budget below one row at the limits still holds that row
    assert plan_memory(recipe(TEXT_RECIPE, "train.micro_batch_tokens=1000"), 8).micro_batch.tokens == 4024


# ---------------------------------------------------------------- formulas against measured bytes


def _tiny_text_run(
    dtype: torch.dtype, checkpointing: bool, vocab: int, prompt: int, response: int, rows: int
):
    """A tiny Qwen2 and one TextPolicyPath.forward (the full [B, R, V] path) under the probes."""
    from transformers import Qwen2ForCausalLM

    from mm_gmpo.text.path import TextPolicyPath
    from mm_gmpo.train.collate import collate_prompt_response

    over = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4)
    over.update(num_key_value_heads=2, vocab_size=vocab)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(tiny_qwen2_config(**over)).to(dtype)
    model.train()
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    for p in model.parameters():  # model states in the plan: allocated outside the probe
        p.grad = torch.zeros_like(p)
    path = TextPolicyPath(
        types.SimpleNamespace(pad_token_id=0, eos_token_id=0), "none", prompt, logit_chunk=0
    )
    g = torch.Generator().manual_seed(0)
    batch = collate_prompt_response(
        [torch.randint(1, vocab, (prompt,), generator=g).tolist() for _ in range(rows)],
        [torch.randint(1, vocab, (response,), generator=g).tolist() for _ in range(rows)],
        0,
    )
    with LiveTensorBytes() as live:
        with SavedTensorBytes(model.parameters(), split=lambda t: t.shape[-1] == vocab) as saved:
            logp, _ = path.forward(model, batch, temperature=1.0)  # [B, R]
        (-(logp * batch.response_mask).sum()).backward()
    name = {torch.float32: "fp32", torch.bfloat16: "bf16"}[dtype]
    cfg = load_config(
        None,
        [
            "model.path=tiny:qwen2",
            f"model.tiny_overrides={json.dumps(over)}",
            f"model.dtype={name}",
            f"model.gradient_checkpointing={str(checkpointing).lower()}",
            f"data.max_prompt_len={prompt}",
            f"rollout.max_new_tokens={response}",
            "rollout.engine=hf",
            "train.engine=torch",
            f"train.micro_batch_size={rows}",
            "train.logit_chunk=0",
        ],
    )
    plan = plan_memory(cfg, world=1)
    return plan, saved, live


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_activation_term_is_what_autograd_saves(dtype: torch.dtype, checkpointing: bool) -> None:
    """Saved-for-backward bytes of a tiny Qwen2 equal the plan's activations. Checkpointed, the
    plan also holds the layer that backward recomputes (not saved in forward) and the RoPE
    tables, which the checkpoints keep themselves rather than through saved-tensor hooks."""
    plan, saved, _ = _tiny_text_run(dtype, checkpointing, vocab=1024, prompt=64, response=96, rows=1)
    planned = plan.row("activations").nbytes
    tokens = plan.micro_batch.tokens
    if checkpointing:
        rope = 2 * plan.shape.hd * dtype.itemsize * tokens
        planned -= layer_saved_bytes_per_token(plan.shape, dtype.itemsize) * tokens + rope
    assert saved.other == pytest.approx(planned, rel=0.005)


@pytest.mark.parametrize("checkpointing", [False, True])
def test_planned_update_peak_bounds_the_measured_one(checkpointing: bool) -> None:
    """Peak live tensor bytes of forward + backward (vocabulary-wide log-probs dominant): the
    plan's activations + log-probs is an upper bound, within 25%."""
    plan, _, live = _tiny_text_run(
        torch.float32, checkpointing, vocab=16384, prompt=128, response=384, rows=1
    )
    planned = plan.row("activations").nbytes + plan.row("log-probs").nbytes
    assert 0.75 * planned <= live.peak <= 1.02 * planned


def test_vision_term_is_what_autograd_saves() -> None:
    from transformers import Qwen2_5_VLForConditionalGeneration

    config = tiny_qwen2_5_vl_config(vision_config={"depth": 3, "fullatt_block_indexes": [2]})
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.train()
    vision = shape_from_hf_config(config, "tiny").vision
    patches = 16 * 16
    pixels = torch.randn(patches, 3 * 2 * 14 * 14)  # [patches, C * T * 14 * 14]
    with SavedTensorBytes(model.parameters()) as saved:
        model.model.visual(pixels, grid_thw=torch.tensor([[1, 16, 16]]))
    assert saved.total == pytest.approx(vision_activation_bytes(vision, patches, 4, False, False), rel=0.01)


# ---------------------------------------------------------------- the dry run


def _dry_run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(["train", *args, "--dry-run"])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.parametrize("config", [TEXT_RECIPE, VL_RECIPE], ids=["text", "vl"])
def test_both_paper_recipes_plan_to_fit_on_8x80gb(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _dry_run(capsys, str(config), "--world-size", "8")
    assert rc == 0, err
    assert "# memory plan per GPU" in out and "fits in 80 GiB" in out
    plan_lines = out[out.index("# dry run OK") :].splitlines()
    assert all(line.startswith("#") for line in plan_lines)  # the output stays YAML
    assert yaml.safe_load(out)["train"]["logit_chunk"] == 256
    plan = plan_memory(load_config(config), world=8)
    assert plan.fits() and plan.peak_bytes < 80 * GIB
    assert render_plan(plan).splitlines()[0] in out


@pytest.mark.parametrize(
    ("overrides", "gpu_mem", "setting"),
    [
        ((), "40", "train.zero_stage=3"),  # rollout phase: model states are its largest part
        (("model.gradient_checkpointing=false",), "80", "model.gradient_checkpointing=true"),
        (("train.logit_chunk=0", "train.micro_batch_tokens=0"), "65", "train.logit_chunk=256"),
        (("rollout.gpu_memory_utilization=0.9",), "80", "rollout.gpu_memory_utilization"),
    ],
)
def test_over_gpu_mem_exits_2_naming_the_setting(
    overrides: tuple[str, ...], gpu_mem: str, setting: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, err = _dry_run(capsys, str(TEXT_RECIPE), *overrides, "--world-size", "8", "--gpu-mem", gpu_mem)
    assert rc == 2
    errors = [line for line in err.splitlines() if line.startswith("config error:")]
    assert len(errors) == 1 and setting in errors[0], err
    assert f"--gpu-mem {gpu_mem} GiB" in errors[0]
    assert "does NOT fit" in out  # the plan is printed before the verdict


def test_unknown_model_plans_what_it_can(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _dry_run(
        capsys, str(TEXT_RECIPE), "model.path=someone/unknown-model-7B", "--world-size", "8"
    )
    assert rc == 0, err
    assert "unknown: " in out and "cannot tell" in out
    assert "vLLM (rollout)" in out  # the parts that need no model shape are still there
