"""Every config field reaches what it configures; the engine builder hands every engine setting on."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import pytest

from mm_gmpo.train import build as build_module
from mm_gmpo.train.config import Config, load_config

REPO = Path(__file__).resolve().parents[2]

# Properties of the config that stand for the fields they read.
PROPERTIES = {"train.start_seed": ("train.seed", "train.base_seed")}


def all_fields(cls: type = Config, prefix: str = "") -> set[str]:
    hints = typing.get_type_hints(cls)
    out: set[str] = set()
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out |= all_fields(hints[f.name], f"{prefix}{f.name}.")
        else:
            out.add(f"{prefix}{f.name}")
    return out


class Tracked:
    """A config (or section) that records the dotted name of every attribute read through it.

    Built after validation, so the checks that read every field do not count: only the code
    that builds and runs the parts does.
    """

    def __init__(self, obj: Any, seen: set[str], prefix: str = "") -> None:
        object.__setattr__(self, "_obj", obj)
        object.__setattr__(self, "_seen", seen)
        object.__setattr__(self, "_prefix", prefix)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._obj, name)
        dotted = f"{self._prefix}{name}"
        self._seen.update(PROPERTIES.get(dotted, (dotted,)))
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return Tracked(value, self._seen, f"{dotted}.")
        return value


class Recorder:
    """Stands in for an engine class: keeps the keyword arguments it was built with."""

    calls: list[dict[str, Any]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        Recorder.calls.append(kwargs)


def test_every_config_field_is_read_by_what_it_configures(tmp_path, monkeypatch) -> None:
    """A field nothing reads is a setting that silently does nothing: this test fails on one."""
    from mm_gmpo.rollout import vllm as vllm_module
    from mm_gmpo.train import ds_engine
    from mm_gmpo.train.run import train
    from mm_gmpo.vl.build import build_parts as build_vl_parts

    seen: set[str] = set()
    # 1. A whole tiny text run: warm start, RL steps with a checkpoint, evaluation, KL reference.
    cfg = load_config(
        REPO / "configs" / "demo_text.yaml",
        [
            f"train.output_dir={tmp_path / 'run'}",
            "train.steps=2",
            "train.save_every=1",
            "train.eval_every=1",
            "train.log_tensorboard=false",
            "train.progress=false",
            "warm_start.steps=1",
            "data.synthetic_train_size=32",
            "data.synthetic_eval_size=4",
            "data.eval_limit=4",
            "train.prompts_per_step=4",
            "rollout.n=2",
            "rollout.max_new_tokens=3",
            "loss.kl_coef=0.01",
            "loss.tis_cap=2.0",
        ],
    )
    train(Tracked(cfg, seen))
    # 2. The DeepSpeed and vLLM builders, with the engines themselves replaced by recorders.
    monkeypatch.setattr(ds_engine, "DeepSpeedEngine", Recorder)
    monkeypatch.setattr(vllm_module, "VLLMEngine", Recorder)
    ds = load_config(None, ["train.engine=deepspeed", "train.offload=true", "rollout.engine=vllm"])
    model = _tiny_model(tmp_path)
    build_module.build_engine(Tracked(ds, seen), model)
    parts = build_module.build_policy_path(ds, _tiny_dir(tmp_path))
    build_module.build_rollout_engine(Tracked(ds, seen), None, parts, _tiny_dir(tmp_path))
    # 3. The VL path's own fields, the geometry reward, and records from a file.
    vl = load_config(REPO / "configs" / "demo_vl.yaml", [f"train.output_dir={tmp_path / 'vl'}"])
    build_vl_parts(Tracked(vl, seen), build_module.resolve_model_path(vl))
    # 4. LoRA: the adapter settings, read where peft wraps the model (the registry's build).
    lora = load_config(
        REPO / "configs" / "demo_vl.yaml",
        [
            f"train.output_dir={tmp_path / 'vl'}",
            "model.lora_rank=4",
            "model.lora_alpha=8",
            "model.lora_dropout=0.1",
            "model.lora_target_modules=[q_proj, v_proj]",
        ],
    )
    wrapped = build_module.build_policy_path(Tracked(lora, seen), build_module.resolve_model_path(lora)).model
    assert sum("lora_" in n for n, _ in wrapped.named_parameters()) == 2 * 2 * lora_layers(wrapped)
    _, scorer = build_module.make_score_fn(Tracked(load_config(None, ["reward.kind=geometry"]), seen))
    scorer.close()
    data = tmp_path / "d.jsonl"
    data.write_text('{"q": "What is 1 + 1?", "a": "2"}\n')
    from_file = load_config(None, ["data.question_key=q", "data.answer_key=a", "data.on_bad_record=error"])
    build_module.load_split(str(data), Tracked(from_file, seen), "train")

    unread = sorted(all_fields() - seen)
    assert unread == [], f"config fields that nothing reads: {unread}"


def lora_layers(model) -> int:
    return model.get_base_model().config.text_config.num_hidden_layers


def _tiny_dir(tmp_path: Path) -> Path:
    from mm_gmpo.testing import tiny_model_dir

    return tiny_model_dir("qwen2")


def _tiny_model(tmp_path: Path):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(_tiny_dir(tmp_path), dtype=torch.float32)


def test_torch_engine_applies_gradient_checkpointing(tmp_path) -> None:
    model = _tiny_model(tmp_path)
    off = build_module.build_engine(load_config(None, []), model)
    assert not off.unwrapped_model().is_activation_checkpointing
    on = build_module.build_engine(
        load_config(None, ["model.gradient_checkpointing=true"]), _tiny_model(tmp_path)
    )
    assert on.unwrapped_model().is_activation_checkpointing


@pytest.mark.slow
def test_paper_text_recipe_under_deepspeed_has_checkpointing_and_offload(tmp_path) -> None:
    """The 7B recipe's settings, on a tiny model: what DeepSpeed received is what the YAML says."""
    pytest.importorskip("deepspeed")
    cfg = load_config(
        REPO / "configs" / "paper_text_gmpo.yaml",
        [
            "model.path=tiny:qwen2",
            "model.dtype=fp32",
            "rollout.engine=hf",
            "data.train=synthetic:largest",
            "data.template=none",
            "data.max_prompt_len=64",
            f"train.output_dir={tmp_path / 'run'}",
            "train.offload=true",
            "train.prompts_per_step=2",
            "reward.num_workers=1",
        ],
    )
    assert cfg.model.gradient_checkpointing and cfg.train.engine == "deepspeed"
    run = build_module.build_run(cfg)
    try:
        engine = run.trainer.engine
        assert engine.unwrapped_model().is_activation_checkpointing
        zero = engine.config["zero_optimization"]  # what deepspeed.initialize received
        assert zero["stage"] == cfg.train.zero_stage == 2
        assert zero["offload_optimizer"]["device"] == "cpu"
        assert engine.engine.zero_offload_optimizer()
    finally:
        run.close()
