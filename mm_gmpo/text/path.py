"""The text path: prompts from records, collation and the causal-LM forward.

The loop talks to this through the same small interface as the VL path
(``build_prompt``, ``collate``, ``forward``); only what differs between text and images lives here.
"""

from __future__ import annotations

from collections import Counter

import torch
from torch import nn

from mm_gmpo.data.records import BadRecordError, Record
from mm_gmpo.data.templates import PromptTemplate, apply_template, get_template
from mm_gmpo.rollout.base import PromptInput, Rollout
from mm_gmpo.rollout.vllm import TokenIdRequests
from mm_gmpo.train.collate import TrainBatch, collate_prompt_response
from mm_gmpo.train.logprobs import DEFAULT_LOGIT_CHUNK, response_logp


class TextPolicyPath:
    """Qwen2-style causal LMs on text prompts.

    ``logit_chunk``: response positions per chunk of LM head + log-softmax in ``forward``
    (:mod:`mm_gmpo.train.logprobs`); 0 computes the full [B, R, V] logits (the reference).
    """

    def __init__(
        self,
        tokenizer,
        template: str | PromptTemplate,
        max_prompt_len: int,
        logit_chunk: int = DEFAULT_LOGIT_CHUNK,
    ) -> None:
        self.tokenizer = tokenizer
        self.logit_chunk = logit_chunk
        self.template = get_template(template) if isinstance(template, str) else template
        self.max_prompt_len = max_prompt_len
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else tokenizer.eos_token_id
        self.bad_records: Counter[str] = Counter()  # refused records by reason

    def build_prompt(self, record: Record) -> PromptInput:
        """Template and tokenize; an empty or over-long prompt is refused, never truncated."""
        try:
            return self._build_prompt(record)
        except BadRecordError as exc:
            self.bad_records[exc.reason] += 1
            raise

    def _build_prompt(self, record: Record) -> PromptInput:
        if not str(record.problem).strip():
            raise BadRecordError(f"record {record.id!r}: empty problem text", "empty_problem")
        try:
            text = apply_template(self.template, record, self.tokenizer)
        except ValueError as exc:  # e.g. a text-only template given a record with images
            raise BadRecordError(f"record {record.id!r}: {exc}", "template") from exc
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) > self.max_prompt_len:
            raise BadRecordError(
                f"record {record.id!r}: prompt is {len(ids)} tokens, over data.max_prompt_len={self.max_prompt_len}",
                "prompt_too_long",
            )
        return PromptInput(input_ids=list(ids))

    def vllm_requests(self) -> TokenIdRequests:
        """This path's vLLM request builder: a text prompt is its token ids."""
        return TokenIdRequests()

    def collate(self, rollout: Rollout, rows: list[int]) -> TrainBatch:
        return collate_prompt_response(
            [rollout.prompt_ids[r] for r in rows], [rollout.response_ids[r] for r in rows], self.pad_id
        )

    def forward(
        self, model: nn.Module, batch: TrainBatch, temperature: float, with_entropy: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Log-probs [B, R] (and entropy [B, R]) of the response tokens under ``model``."""
        inputs = {
            "input_ids": batch.input_ids,  # [B, P+R]
            "attention_mask": batch.attention_mask,  # [B, P+R]
            "position_ids": batch.position_ids,  # [B, P+R]
        }
        return response_logp(
            model,
            inputs,
            batch.response_ids,
            temperature,
            chunk=self.logit_chunk,
            with_entropy=with_entropy,
            mask=batch.response_mask,  # [B, R]
        )

    def decode(self, rollout: Rollout) -> list[str]:
        return self.tokenizer.batch_decode(rollout.response_ids, skip_special_tokens=True)
