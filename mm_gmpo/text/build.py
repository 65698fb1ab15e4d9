"""The text path's builder (registered as ``text`` in :mod:`mm_gmpo.policy_paths`).

Config fields read here: ``model.path`` (already resolved to ``model_dir``), ``model.dtype``,
``model.trust_remote_code``, ``data.template``, ``data.chat_template``, ``data.max_prompt_len``.
Activation checkpointing is not set here: the training engine owns it (``build_engine``), so it
is set once, in the form that works under every engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from mm_gmpo.dtypes import resolve_dtype
from mm_gmpo.policy_paths import PathParts, model_structure
from mm_gmpo.text.path import TextPolicyPath

if TYPE_CHECKING:
    from mm_gmpo.train.config import Config

REQUIRED_PACKAGES: tuple[str, ...] = ()  # transformers and torch are the project's own dependencies


def load_model(cfg: Config, model_dir: str | Path) -> nn.Module:
    """A causal LM (Qwen2, Qwen2.5-Math, R1-Distill-Qwen, ...) on the CPU in ``model.dtype``."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=resolve_dtype(cfg.model.dtype), trust_remote_code=cfg.model.trust_remote_code
    )


def build_parts(cfg: Config, model_dir: str | Path, *, weights: bool = True) -> PathParts:
    """Tokenizer, model and :class:`TextPolicyPath`; generate needs no collator of its own."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    trust = cfg.model.trust_remote_code
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust)
    if cfg.data.chat_template:
        # Why: e.g. an older R1-Distill tokenizer revision whose template does not open <think>;
        # the replacement is saved with the tokenizer, so checkpoints prompt the same way.
        tokenizer.chat_template = Path(cfg.data.chat_template).expanduser().read_text(encoding="utf-8")
    path = TextPolicyPath(tokenizer, cfg.data.template, cfg.data.max_prompt_len, cfg.train.logit_chunk)
    model = (
        load_model(cfg, model_dir)
        if weights
        else model_structure(AutoModelForCausalLM.from_config, model_dir, trust)
    )
    return PathParts(model=model, saveable=tokenizer, tokenizer=tokenizer, path=path)
