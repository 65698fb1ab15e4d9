"""Response-token log-probs and entropy without a [B, R, V] tensor.

Why: at the paper's shapes (3000-token responses, a 151,936-token vocabulary) the reference
computation (:func:`mm_gmpo.train.collate.response_logp_and_entropy` on the model's logits)
keeps the logits, their float32 copy, the log-softmax saved for backward and its ``exp()`` for
the entropy alive together: 16 bytes per element of [B, R, V], 7.3 GB per row at R = 3000.
Here the model returns only its final hidden states; the LM head, the sampled token's log-prob
and the entropy are computed ``chunk`` positions at a time, and each chunk is recomputed in
backward, so at most one chunk's vocabulary-wide tensors exist at a time.

* Chunks run over the flattened real response tokens of the micro-batch (padding is skipped),
  so a chunk's size does not grow with the number of rows a token-budget micro-batch holds.
* Per chunk: a non-reentrant ``torch.utils.checkpoint`` around [LM head -> :class:`_SampledLogProb`].
  It keeps only its inputs (the chunk's hidden states and ids) between forward and backward; the
  LM head is called as a module in both passes, so DeepSpeed ZeRO-3's parameter gathering hooks
  fire (and tied embeddings receive their gradient through it).
* :class:`_SampledLogProb` returns log p(sampled token) with the softmax gradient written in
  closed form, ``dlogp/dz = onehot - softmax(z)``: its backward builds one float32 chunk tensor
  (the softmax, turned in place into the gradient), where autograd through ``log_softmax`` +
  ``gather`` keeps the log-softmax output and builds the gather's scatter, the log-softmax
  gradient and the division's gradient, one float32 chunk tensor each. That is the lower peak
  of the two choices, and less memory traffic (a checkpoint around plain autograd ops would
  recompute and keep all of those).
* The forward pass computes the chunk's log-sum-exp and (no grad) its entropy; the backward's
  recomputation reuses that [c] log-sum-exp and only rebuilds the logits.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from mm_gmpo.train import dist
from mm_gmpo.train.collate import response_logp_and_entropy

# Response positions per chunk unless the caller says otherwise (``train.logit_chunk``'s default).
DEFAULT_LOGIT_CHUNK = 256
# A banned token's logit: large and finite, not -inf (0 * -inf would turn the entropy into NaN).
BANNED_LOGIT = -1e30


def _zero3_partitioned(module: nn.Module) -> bool:
    """Whether DeepSpeed ZeRO-3 partitions ``module``'s parameters (they carry a ``ds_id``)."""
    return any(hasattr(p, "ds_id") for p in module.parameters())


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


def _picked_logits(
    logits: torch.Tensor, ids: torch.Tensor, temperature: float, banned: torch.Tensor | None
) -> torch.Tensor:
    """z of the sampled ids [c]: their logits (BANNED_LOGIT if banned) / T, in float32."""
    picked = logits.gather(-1, ids.unsqueeze(-1)).squeeze(-1).float()  # [c]
    if banned is not None:
        picked = picked.masked_fill(torch.isin(ids, banned), BANNED_LOGIT)
    return picked / temperature if _scales(temperature) else picked


def _scales(temperature: float) -> bool:
    return temperature > 0 and temperature != 1.0


class _ChunkState:
    """What one chunk's first (forward) call leaves for the backward's recomputation.

    The checkpoint calls the chunk twice: in forward, and in backward to rebuild the logits. The
    first call computes the log-sum-exp and the entropy; the second reuses that log-sum-exp (a
    [c] tensor) instead of another pass over the vocabulary, and skips the entropy.
    """

    def __init__(self, entropies: list[torch.Tensor] | None) -> None:
        self.lse: torch.Tensor | None = None  # [c]
        self.entropies = entropies


class _SampledLogProb(torch.autograd.Function):
    """log softmax(z)[sampled id], z = logits / T, with its gradient in closed form.

    Saves the chunk's logits (the LM head's output, in the model's dtype) and the [c]
    log-sum-exp; the backward builds one float32 [c, V] tensor, the softmax, and turns it into
    the gradient in place: d logp / d z = onehot(id) - softmax(z).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        logits: torch.Tensor,  # [c, V]
        ids: torch.Tensor,  # [c]
        temperature: float,
        banned: torch.Tensor | None,  # [n_banned]
        state: _ChunkState,
    ) -> torch.Tensor:
        if state.lse is None:
            z = logits.float()  # [c, V] (the logits themselves when they are float32)
            if banned is not None or _scales(temperature):
                z = z.clone() if z is logits else z  # never write into the logits
                if banned is not None:
                    z.index_fill_(-1, banned, BANNED_LOGIT)
                if _scales(temperature):
                    z.div_(temperature)
            top = z.amax(dim=-1, keepdim=True)  # [c, 1]
            exp = torch.sub(z, top).exp_()  # [c, V] unnormalised softmax
            total = exp.sum(dim=-1)  # [c]
            state.lse = top.squeeze(-1) + total.log()  # [c]
            if state.entropies is not None:
                # H = lse - sum_v p_v z_v; a dot product, not a second [c, V] temporary.
                dot = (exp.unsqueeze(-2) @ z.unsqueeze(-1)).squeeze(-1).squeeze(-1)  # [c]
                state.entropies.append(state.lse - dot / total)
            del z, exp
        lse = state.lse  # [c]
        ctx.temperature = temperature
        ctx.save_for_backward(logits, ids, lse, banned)
        return _picked_logits(logits, ids, temperature, banned) - lse  # [c]

    @staticmethod
    def backward(ctx: Any, grad_logp: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # grad_logp [c]
        logits, ids, lse, banned = ctx.saved_tensors
        inv_t = 1.0 / ctx.temperature if _scales(ctx.temperature) else 1.0
        # softmax(z) = exp(logits / T - lse), float32 whatever the logits' dtype
        grad = torch.add(lse.neg().unsqueeze(-1), logits, alpha=inv_t).exp_()  # [c, V]
        if banned is not None:
            grad.index_fill_(-1, banned, 0.0)  # a banned token's probability is 0
        scaled = grad_logp * inv_t  # [c] d loss / d logp, through z = logits / T
        grad.mul_(scaled.neg().unsqueeze(-1))  # -g p
        grad.scatter_add_(-1, ids.unsqueeze(-1), scaled.unsqueeze(-1))  # + g at the sampled id
        if banned is not None:
            grad.index_fill_(-1, banned, 0.0)  # banned logits are constants
        return grad.to(logits.dtype), None, None, None, None


class _FrozenPartitionedHead(torch.autograd.Function):
    """``lm_head(h)`` for a frozen LM head whose weight ZeRO-3 partitions (LoRA under ZeRO-3).

    Why: DeepSpeed releases a frozen module's weight right after its forward when that forward
    runs outside any module's backward, which is where the chunk's recomputation runs; the
    weight autograd saved would be empty when the backward needs it. Here the weight is
    gathered explicitly for the product and again for the backward, and nothing is saved. Every
    rank runs the same number of chunks, so the gathers (collectives) pair up.
    """

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, head: nn.Module) -> torch.Tensor:  # type: ignore[override]
        import deepspeed

        ctx.head = head
        with deepspeed.zero.GatheredParameters(list(head.parameters())):
            return nn.functional.linear(hidden, head.weight, getattr(head, "bias", None))  # [c, V]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        import deepspeed

        with deepspeed.zero.GatheredParameters([ctx.head.weight]):
            return grad @ ctx.head.weight.to(grad.dtype), None  # [c, H]


def _head_call(lm_head: nn.Module, track: bool) -> Any:
    """How a chunk calls the LM head: as a module (ZeRO-3's hooks gather it), or, frozen and
    partitioned under a tracked backward, through :class:`_FrozenPartitionedHead`."""
    frozen = not any(p.requires_grad for p in lm_head.parameters())
    if track and frozen and _zero3_partitioned(lm_head):
        return lambda h: _FrozenPartitionedHead.apply(h, lm_head)
    return lm_head


def chunked_logp_and_entropy(
    hidden: torch.Tensor,
    lm_head: nn.Module,
    response_ids: torch.Tensor,
    temperature: float,
    chunk: int,
    with_entropy: bool = True,
    banned_ids: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs [B, R] (and entropy [B, R], no grad) of ``response_ids`` [B, R] from ``hidden`` [B, R, H].

    Equal to :func:`response_logp_and_entropy` on ``lm_head(hidden)`` (with ``banned_ids`` set to
    ``BANNED_LOGIT`` first), values and gradients, but never holds more than ``chunk`` positions
    of vocabulary-wide tensors. Chunks run over the flattened (row, position) pairs, so their size
    does not grow with the rows of a micro-batch; with ``mask`` [B, R] only the response's real
    tokens are scored (padding gets log-prob and entropy 0, and costs no LM-head work).
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    batch, width_r, _ = hidden.shape
    if mask is None:
        mask = torch.ones(batch, width_r, dtype=torch.bool, device=hidden.device)  # [B, R]
    rows, cols = mask.bool().nonzero(as_tuple=True)  # [N] each: the positions to score
    flat_hidden = hidden[rows, cols]  # [N, H]
    flat_ids = response_ids[rows, cols]  # [N]
    track = torch.is_grad_enabled() and (
        hidden.requires_grad or any(p.requires_grad for p in lm_head.parameters())
    )
    n_chunks = -(-flat_ids.shape[0] // chunk)
    if _zero3_partitioned(lm_head):
        # Each LM-head call all-gathers its partitioned weight, a collective: every rank must
        # make as many calls (forward and recomputation) or the gathers pair up wrongly and hang.
        # Ranks with fewer tokens run empty chunks.
        n_chunks = dist.all_reduce_max(n_chunks)
    head = _head_call(lm_head, track)
    logps: list[torch.Tensor] = []
    entropies: list[torch.Tensor] = []
    for start in range(0, n_chunks * chunk, chunk):
        h = flat_hidden[start : start + chunk]  # [c, H] (c = 0 past the last token)
        ids = flat_ids[start : start + chunk]  # [c]
        state = _ChunkState(entropies if with_entropy else None)

        def score(h: torch.Tensor, ids: torch.Tensor, state: _ChunkState = state) -> torch.Tensor:
            return _SampledLogProb.apply(head(h), ids, temperature, banned_ids, state)  # [c]

        if track:
            logps.append(checkpoint(score, h, ids, use_reentrant=False))
        else:
            with torch.no_grad():
                logps.append(score(h, ids))
    empty = hidden.new_zeros(batch, width_r, dtype=torch.float32)  # [B, R]
    flat_logp = torch.cat(logps) if logps else empty.new_zeros(0)  # [N]
    logp = empty.index_put((rows, cols), flat_logp)  # [B, R]
    entropy = None
    if with_entropy:
        flat_entropy = torch.cat(entropies) if entropies else empty.new_zeros(0)  # [N]
        entropy = empty.index_put((rows, cols), flat_entropy.detach())  # [B, R]
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
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs [B, R] (and entropy) of ``response_ids`` [B, R], the last R tokens of ``inputs``.

    ``chunk`` > 0: the memory-lean path (final hidden states, chunked LM head; with ``mask``
    [B, R] padded positions are skipped and read 0); 0: the reference path (full [B, R, V] logits
    through :func:`response_logp_and_entropy`). ``banned_ids`` get probability 0 in both, as the
    samplers give them.
    """
    width_r = response_ids.shape[1]
    if chunk > 0:
        hidden = final_hidden_states(model, inputs, width_r)  # [B, R, H]
        banned = torch.tensor(banned_ids, device=hidden.device) if banned_ids else None  # [n_banned]
        return chunked_logp_and_entropy(
            hidden, output_embeddings(model), response_ids, temperature, chunk, with_entropy, banned, mask
        )
    out = model(**inputs, logits_to_keep=width_r + 1, use_cache=False)
    logits = out.logits[:, :-1]  # [B, R, V]: position P-1+t predicts response token t
    if banned_ids:
        banned = torch.tensor(banned_ids, device=logits.device)  # [n_banned]
        logits = logits.float().index_fill(-1, banned, BANNED_LOGIT)  # [B, R, V]
    return response_logp_and_entropy(logits, response_ids, temperature, with_entropy)
