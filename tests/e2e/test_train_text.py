"""End-to-end text runs through `train()` with the real scorer: resume and the demo task."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from mm_gmpo.train.config import load_config
from mm_gmpo.train.logging import read_metrics
from mm_gmpo.train.run import train

pytestmark = pytest.mark.slow

SMALL = [
    "model.path=tiny:qwen2",
    "data.train=synthetic:arithmetic",
    "data.template=none",
    "data.synthetic_train_size=64",
    "rollout.n=4",
    "rollout.max_new_tokens=6",
    "train.prompts_per_step=4",
    "train.micro_batch_size=8",
    "train.mini_batches=2",
    "train.progress=false",
    "train.log_tensorboard=false",
    "optim.lr=5e-3",
    "warm_start.steps=3",
    "reward.num_workers=1",
]


def _comparable(rows):
    return [{k: v for k, v in r.items() if not k.startswith("time")} for r in rows]


def _weights(run_dir, name="model.safetensors"):
    ckpt = sorted((run_dir / "checkpoints").glob("step_*"))[-1]
    return load_file(str(ckpt / "model" / name))


def _digit_share_scorer(cfg):
    """A reward with spread in every group (share of digits), so each step really updates."""

    def score(texts, records, truncated):
        rewards = [sum(c.isdigit() for c in t) / max(1, len(t)) for t in texts]
        return rewards, rewards, {}

    return score, None


# LoRA's twin: adapters only in the checkpoint, the KL reference being the adapter-free policy.
LORA = ["model.lora_rank=4", "model.lora_alpha=8", "loss.kl_coef=0.05", "optim.lr=5e-2"]


@pytest.mark.parametrize(
    ("extra", "weights_file"),
    [([], "model.safetensors"), (LORA, "adapter_model.safetensors")],
    ids=["full", "lora"],
)
def test_resume_equals_uninterrupted_run_bit_for_bit(tmp_path, monkeypatch, extra, weights_file):
    import mm_gmpo.train.build as build

    monkeypatch.setattr(build, "make_score_fn", _digit_share_scorer)
    small = [*SMALL, *extra]
    straight = tmp_path / "straight"
    train(load_config(None, [*small, f"train.output_dir={straight}", "train.steps=4", "train.save_every=2"]))

    resumed = tmp_path / "resumed"
    first = train(load_config(None, [*small, f"train.output_dir={resumed}", "train.steps=2"]))
    assert first["steps"] == 2
    # A save that died later must not be picked up.
    (resumed / "checkpoints" / ".tmp_step_00000003").mkdir()
    # train.steps changed, so continuing is said explicitly (unset, the changed config is refused).
    second = train(
        load_config(None, [*small, f"train.output_dir={resumed}", "train.steps=4", "train.resume=auto"])
    )
    assert second["resumed_from"].endswith("step_00000002")

    rows = _comparable(read_metrics(resumed))
    assert rows == _comparable(read_metrics(straight))
    assert all(r["grad_norm"] > 0 for r in rows if "grad_norm" in r)  # every step really updated
    saved = {p.name for p in (sorted((resumed / "checkpoints").glob("step_*"))[-1] / "model").iterdir()}
    assert weights_file in saved and (("adapter_config.json" in saved) == bool(extra))
    if extra:
        assert "model.safetensors" not in saved  # no copy of the frozen base
        # the warm start trained the whole model, which is the adapters' base from then on
        ckpt_model = sorted((resumed / "checkpoints").glob("step_*"))[-1] / "model"
        base = json.loads((ckpt_model / "adapter_config.json").read_text())["base_model_name_or_path"]
        assert base == str((resumed / "warm_start_model").resolve())
        start = load_file(str(resumed / "tiny_model" / "model.safetensors"))
        warm = load_file(str(resumed / "warm_start_model" / "model.safetensors"))
        assert any(not torch.equal(start[n], warm[n]) for n in start)
        kls = [r["ref_kl"] for r in rows if "ref_kl" in r]
        assert len(kls) == 4 and min(kls) > 0  # the adapter-free reference is not the policy
    a, b = _weights(straight, weights_file), _weights(resumed, weights_file)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_demo_task_reward_rises_and_every_parameter_moves(tmp_path):
    """The demo recipe, shortened: RL after the warm-start raises the training reward."""
    from mm_gmpo.resources import config_path

    out = tmp_path / "demo"
    cfg = load_config(
        config_path("demo_text.yaml"),
        [
            f"train.output_dir={out}",
            "train.progress=false",
            "train.log_tensorboard=false",
            "train.save_every=0",
        ],
    )
    summary = train(cfg)
    rows = [r for r in read_metrics(out) if "reward_mean" in r]
    k = max(1, len(rows) // 4)
    early = sum(r["reward_mean"] for r in rows[:k]) / k
    late = sum(r["reward_mean"] for r in rows[-k:]) / k
    assert late > early, (early, late)
    assert summary["eval_accuracy_after"] >= summary["eval_accuracy_before"]

    start = load_file(str(out / "tiny_model" / "model.safetensors"))
    end = _weights(out)
    unchanged = [n for n in start if torch.equal(start[n], end[n])]
    assert unchanged == []
    assert json.loads((out / "summary.json").read_text())["steps"] == cfg.train.steps
    assert (out / "training.png").stat().st_size > 0
