"""The R1-Distill recipe's template and data path, on CPU: 2 steps of the recipe's YAML with a tiny
Qwen2, the DeepScaleR fixture and a chat template that opens ``<think>`` (the real checkpoint's
does; the tiny tokenizer's does not, so ``data.chat_template`` hands the test's one in).

Only the model, the engines and the sizes are overridden; the template (``r1_distill``), the data
keys, the loss, the clip range, the sampling temperature and the reward stay as in the recipe.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from transformers import AutoTokenizer

from mm_gmpo.data.loaders import load_records
from mm_gmpo.policy_paths import build_policy_path
from mm_gmpo.testing import R1_DISTILL_STYLE_CHAT_TEMPLATE
from mm_gmpo.train.config import load_config
from mm_gmpo.train.logging import read_metrics
from mm_gmpo.train.run import train

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "configs" / "paper_text_r1distill_gmpo.yaml"
FIXTURE = REPO / "tests" / "fixtures" / "deepscaler" / "deepscaler.json"

SHRINK = [
    "model.path=tiny:qwen2",
    "model.dtype=fp32",
    f"data.train={FIXTURE}",
    "rollout.engine=hf",
    "rollout.n=2",
    "rollout.max_new_tokens=8",
    "rollout.batch_size=4",
    "train.engine=torch",
    "train.steps=2",
    "train.prompts_per_step=4",
    "train.mini_batches=2",
    "train.save_every=0",
    "train.progress=false",
    "train.log_tensorboard=false",
    "reward.num_workers=1",
]


@pytest.mark.slow
def test_r1distill_recipe_trains_two_steps_through_its_think_template(tmp_path: Path) -> None:
    template_file = tmp_path / "r1_distill.jinja"
    template_file.write_text(R1_DISTILL_STYLE_CHAT_TEMPLATE, encoding="utf-8")
    out = tmp_path / "run"
    cfg = load_config(RECIPE, [*SHRINK, f"data.chat_template={template_file}", f"train.output_dir={out}"])
    recipe = yaml.safe_load(RECIPE.read_text())
    assert (cfg.data.template, cfg.loss.name, cfg.rollout.temperature) == ("r1_distill", "gmpo", 1.0)
    assert cfg.data.question_key == recipe["data"]["question_key"] == "problem"

    summary = train(cfg)
    assert summary["steps"] == 2 and summary["skipped_records_by_reason"] == {}
    rows = [r for r in read_metrics(out) if "grad_norm" in r]
    assert len(rows) == 2

    # The prompts the run built: one user turn, then the template's assistant turn inside <think>.
    parts = build_policy_path(cfg, out / "tiny_model")
    record = load_records(FIXTURE)[1]
    prompt = parts.tokenizer.decode(parts.path.build_prompt(record).input_ids)
    assert prompt.startswith(f"<|User|>{record.problem}\n")
    assert prompt.endswith("\\boxed{}.<|Assistant|><think>\n")
    assert "system" not in prompt
    # the run's saved tokenizer carries the template, so the checkpoint prompts the same way
    saved = sorted((out / "checkpoints").glob("step_*"))[-1] / "model"
    assert AutoTokenizer.from_pretrained(saved).chat_template == R1_DISTILL_STYLE_CHAT_TEMPLATE
