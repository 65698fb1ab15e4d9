"""Response-token log-probs and entropy without a [B, R, V] tensor.

Why: at the paper's shapes (3000-token responses, a 151,936-token vocabulary) the reference
computation (:func:`mm_gmpo.train.collate.response_logp_and_entropy` on the model's logits)
keeps the logits, their float32 copy, the log-softmax saved for backward and its ``exp()`` for
the entropy alive together: 16 bytes per element of [B, R, V], 7.3 GB per row at R = 3000.
Here the model returns only its final hidden states; the LM head, the sampled token's log-prob
and the entropy are computed ``chunk`` positions at a time, and each chunk is recomputed in
backward, so at most one chunk's vocabulary-wide tensors exist at a time.

Per chunk: a non-reentrant ``torch.utils.checkpoint`` around [LM head -> :class:`_SampledLogProb`].

* The checkpoint keeps only its inputs (a view of the hidden states and the ids) between forward
  and backward; the LM head is called as a module in both passes, so DeepSpeed ZeRO-3's
  parameter gathering hooks fire (and tied embeddings receive their gradient through it).
* :class:`_SampledLogProb` takes the logits and returns log p(sampled token) with the softmax
  gradient written in closed form, ``dlogp/dz = onehot - softmax(z)``: its backward builds one
  float32 chunk tensor (the softmax, turned in place into the gradient) where autograd through
  ``log_softmax`` + ``gather`` keeps the log-softmax output and builds the gather's scatter, the
  log-softmax gradient and the division's gradient, one float32 chunk tensor each. That is the
  lower peak, and less memory traffic.
* The entropy is a no-grad by-product of the forward; the backward's recomputation skips it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from mm_gmpo.train.collate import response_logp_and_entropy

# Response positions per chunk unless the caller says otherwise (``train.logit_chunk``'s default).
DEFAULT_LOGIT_CHUNK = 256
# A banned token's logit: large and finite, not -inf (0 * -inf would turn the entropy into NaN).
BANNED_LOGIT = -1e30


def output_embeddings(model: nn.Module) -> nn.Module:
    """The LM head module of ``model`` or of the HF model inside a wrapper (``.module``)."""
    hf = getattr(model, "module", model)
    head = hf.get_output_embeddings()
    if head is None:
        raise ValueError(f"{type(hf).__name__} has no output embeddings (LM head) to score tokens with")
    return head


def final_hidden_states(model: nn.Module, inputs: dict[str, Any], width_r: int) -> torch.Tensor:
    """Final-norm hidden states [B, R, H] of the positions that predict the R response tokens.

    Called through ``model`` itself (a DeepSpeed engine or the HF model), so the wrapper's
    forward and its hooks run as for any forward. ``output_hidden_states=-1`` asks transformers
    (5.x ``capture_outputs``) for the last hidden state only, which it ties to the base model's
    ``last_hidden_state``, i.e. after the final norm, for Qwen2 and Qwen2.5-VL's text model
    alike; a version that only knows the flag returns all of them, the last one being the same.
    ``logits_to_keep=1`` keeps the model's own LM head to one position.
    """
    out = model(**inputs, output_hidden_states=-1, logits_to_keep=1, use_cache=False)
    hidden = out.hidden_states[-1]  # [B, P+R, H] after the final norm
    if hidden is None or hidden.dim() != 3:
        raise RuntimeError(f"{type(model).__name__} did not return its final hidden states")
    return hidden[:, -(width_r + 1) : -1]  # [B, R, H]: position P-1+t predicts response token t


def _scaled_logits(
    logits: torch.Tensor, temperature: float, banned: torch.Tensor | None, copy: bool
) -> torch.Tensor:
    """logits -> float32 z = (logits, banned ones set to BANNED_LOGIT) / T, as the sampler scored them."""
    z = logits.float()  # [B, c, V]
    if banned is None and not (temperature > 0 and temperature != 1.0):
        return z.clone() if copy and z is logits else z
    if z is logits:
        z = z.clone()  # never write into the caller's logits
    if banned is not None:
        z.index_fill_(-1, banned, BANNED_LOGIT)
    if temperature > 0 and temperature != 1.0:
        z.div_(temperature)
    return z


class _SampledLogProb(torch.autograd.Function):
    """log softmax(z)[sampled id] with its gradient in closed form (see the module docstring).

    Saves the chunk's logits (the LM head's output, in the model's dtype) and its log-sum-exp.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        logits: torch.Tensor,  # [B, c, V]
        ids: torch.Tensor,  # [B, c]
        temperature: float,
        banned: torch.Tensor | None,  # [n_banned]
        entropy_out: list[torch.Tensor],
    ) -> torch.Tensor:
        z = _scaled_logits(logits, temperature, banned, copy=False)  # [B, c, V] float32
        lse = torch.logsumexp(z, dim=-1)  # [B, c]
        logp = z.gather(-1, ids.unsqueeze(-1)).squeeze(-1) - lse  # [B, c]
        if entropy_out is not None:
            # H = lse - sum_v p_v z_v; the dot product avoids a second [B, c, V] temporary.
            p = (z - lse.unsqueeze(-1)).exp_()  # [B, c, V]
            dot = (p.unsqueeze(-2) @ z.unsqueeze(-1)).squeeze(-1).squeeze(-1)  # [B, c]
            entropy_out.append(lse - dot)
        ctx.temperature = temperature
        ctx.save_for_backward(logits, ids, lse, banned)
        return logp

    @staticmethod
    def backward(ctx: Any, grad_logp: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # grad_logp [B, c]
        logits, ids, lse, banned = ctx.saved_tensors
        temperature = ctx.temperature
        grad = _scaled_logits(logits, temperature, banned, copy=True)  # [B, c, V]
        grad.sub_(lse.unsqueeze(-1)).exp_()  # softmax(z)
        grad.mul_(-grad_logp.unsqueeze(-1))  # -g * p
        grad.scatter_add_(-1, ids.unsqueeze(-1), grad_logp.unsqueeze(-1))  # + g at the sampled id
        if banned is not None:
            grad.index_fill_(-1, banned, 0.0)  # banned logits are constants
        if temperature > 0 and temperature != 1.0:
            grad.div_(temperature)
        return grad.to(logits.dtype), None, None, None, None


def chunked_logp_and_entropy(
    hidden: torch.Tensor,
    lm_head: nn.Module,
    response_ids: torch.Tensor,
    temperature: float,
    chunk: int,
    with_entropy: bool = True,
    banned_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs [B, R] (and entropy [B, R], no grad) of ``response_ids`` [B, R] from ``hidden`` [B, R, H].

    Equal to :func:`response_logp_and_entropy` on ``lm_head(hidden)`` (with ``banned_ids`` set to
    ``BANNED_LOGIT`` first), values and gradients, but never holds more than ``chunk`` positions
    of vocabulary-wide tensors.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    width_r = response_ids.shape[1]
    track = torch.is_grad_enabled() and (
        hidden.requires_grad or any(p.requires_grad for p in lm_head.parameters())
    )
    logps: list[torch.Tensor] = []
    entropies: list[torch.Tensor] = []
    for start in range(0, width_r, chunk):
        h = hidden[:, start : start + chunk]  # [B, c, H]
        ids = response_ids[:, start : start + chunk]  # [B, c]
        first_pass = [True]

        def score(h: torch.Tensor, ids: torch.Tensor, first_pass: list[bool] = first_pass) -> torch.Tensor:
            # Entropy on the forward pass only: the backward's recomputation has no use for it.
            sink = entropies if (with_entropy and first_pass[0]) else None
            first_pass[0] = False
            return _SampledLogProb.apply(lm_head(h), ids, temperature, banned_ids, sink)

        if track:
            logps.append(checkpoint(score, h, ids, use_reentrant=False))
        else:
            with torch.no_grad():
                logps.append(score(h, ids))
    logp = torch.cat(logps, dim=1)  # [B, R]
    entropy = torch.cat(entropies, dim=1).detach() if with_entropy else None  # [B, R]
    return logp, entropy


def response_logp(
    model: nn.Module,
    inputs: dict[str, Any],
    response_ids: torch.Tensor,
    temperature: float,
    *,
    chunk: int,
    with_entropy: bool = True,
    banned_ids: list[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs [B, R] (and entropy) of ``response_ids`` [B, R], the last R tokens of ``inputs``.

    ``chunk`` > 0: the memory-lean path (final hidden states, chunked LM head); 0: the reference
    path (full [B, R, V] logits through :func:`response_logp_and_entropy`). ``banned_ids`` get
    probability 0 in both, as the samplers give them.
    """
    width_r = response_ids.shape[1]
    if chunk > 0:
        hidden = final_hidden_states(model, inputs, width_r)  # [B, R, H]
        banned = torch.tensor(banned_ids, device=hidden.device) if banned_ids else None  # [n_banned]
        return chunked_logp_and_entropy(
            hidden, output_embeddings(model), response_ids, temperature, chunk, with_entropy, banned
        )
    out = model(**inputs, logits_to_keep=width_r + 1, use_cache=False)
    logits = out.logits[:, :-1]  # [B, R, V]: position P-1+t predicts response token t
    if banned_ids:
        banned = torch.tensor(banned_ids, device=logits.device)  # [n_banned]
        logits = logits.float().index_fill(-1, banned, BANNED_LOGIT)  # [B, R, V]
    return response_logp_and_entropy(logits, response_ids, temperature, with_entropy)
