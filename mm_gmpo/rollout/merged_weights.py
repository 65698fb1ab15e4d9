"""A LoRA policy's weights as the plain transformers model would hold them, for the vLLM sync.

vLLM serves the base architecture, so a peft-wrapped policy is streamed with every LoRA
adapter folded into its base weight, under the base model's own parameter names
(``model.layers.0.self_attn.q_proj.weight``, not ``base_model.model.…q_proj.base_layer.weight``)
and without the adapter factors (``lora_A`` / ``lora_B``).

Why out of place (``W + ΔW`` into a fresh tensor, ΔW from peft's ``get_delta_weight``) rather than peft's ``merge_adapter()`` … ``unmerge_adapter()``: the
round trip ``(W + ΔW) − ΔW`` is not ``W`` in floating point. Measured on the tiny Qwen2 with
rank-8 adapters on every linear layer and non-zero ``lora_B``: one merge/unmerge changed all 14
adapted base weights (~87k elements; max |Δ| 7.5e-9 in fp32, 4.9e-4 in bf16). A weight sync
runs every step, so the frozen base would drift over a run and the "base stays bit-identical"
guarantee would break. Out of place, the trainer's model is never written to, and the values
are those ``merge_and_unload()`` gives (the same elementwise ``W + ΔW``).

Under ZeRO-3 a layer's base weight and adapter factors are gathered together (collective: every
rank walks the modules in the same order), merged into a copy, and released before the next.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from mm_gmpo.lora import peft_model_of


def adapted_base_model(model: nn.Module) -> nn.Module | None:
    """The transformers model inside a peft-wrapped policy (with the LoRA layers in it), or None
    for a plain policy."""
    peft_model = peft_model_of(model)
    return None if peft_model is None else peft_model.get_base_model()


@contextlib.contextmanager
def gathered(params: Sequence[nn.Parameter]) -> Iterator[None]:
    """Full ZeRO-3 parameters for the duration (read-only: changes are discarded); a no-op for
    ordinary parameters."""
    if any(hasattr(p, "ds_id") for p in params):
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(params), modifier_rank=None):
            yield
    else:
        yield


def iter_merged_weights(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """``(hf_name, tensor)`` of a peft-wrapped policy with its active LoRA adapters merged.

    Names and order are those of the plain transformers model's ``named_parameters()`` (tied
    weights once). A merged weight is a new tensor; the rest are the parameters themselves,
    detached (copies under ZeRO-3), as for a plain policy. The policy is never written to.
    """
    base = adapted_base_model(model)
    if base is None:
        raise TypeError(f"{type(model).__name__} carries no peft model")
    tied = _tied_parameter_ids(base)
    seen: set[int] = set()
    for prefix, module in _walk_modules(base):
        if _is_lora_layer(module):
            yield from _merged_lora_layer(prefix, module, tied)
            continue
        for name, param in module.named_parameters(recurse=False):
            if id(param) in seen:
                continue
            seen.add(id(param))
            with gathered([param]):
                yield prefix + name, _owned(param)


def _owned(param: nn.Parameter) -> torch.Tensor:
    """The parameter's data, detached; copied when it is a ZeRO-3 gather, whose storage DeepSpeed
    frees on leaving the context while vLLM may still read it."""
    return param.detach().clone() if hasattr(param, "ds_id") else param.detach()


def _walk_modules(module: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    """Modules in ``named_modules`` order, with ``prefix`` ending in a dot; a LoRA layer is
    yielded whole (its ``base_layer`` and adapter factors are not visited on their own)."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import AuxiliaryTrainingWrapper

    if isinstance(module, (BaseTunerLayer, AuxiliaryTrainingWrapper)) and not _is_lora_layer(module):
        raise ValueError(
            f"{prefix.rstrip('.') or 'the model'} is a {type(module).__name__}: only LoRA layers "
            "(linear, embedding, convolution) can be merged for the vLLM weight sync"
        )
    yield prefix, module
    if _is_lora_layer(module):
        return
    for name, child in module.named_children():
        yield from _walk_modules(child, f"{prefix}{name}.")


def _is_lora_layer(module: nn.Module) -> bool:
    """peft's LoRA linear / embedding / convolution layers: they merge as ``W + ΔW``."""
    from peft.tuners.lora.layer import Embedding, Linear, _ConvNd

    return isinstance(module, (Linear, Embedding, _ConvNd))


def _tied_parameter_ids(model: nn.Module) -> set[int]:
    """Ids of parameters reachable under more than one name (tied embeddings)."""
    counts: dict[int, int] = {}
    for _, param in model.named_parameters(remove_duplicate=False):
        counts[id(param)] = counts.get(id(param), 0) + 1
    return {key for key, n in counts.items() if n > 1}


def _merged_lora_layer(prefix: str, layer: Any, tied: set[int]) -> Iterator[tuple[str, torch.Tensor]]:
    """The base layer's parameters under the layer's own name, adapters folded in."""
    base_layer = layer.get_base_layer()
    if id(base_layer.weight) in tied:
        raise ValueError(
            f"LoRA on {prefix.rstrip('.')}, whose weight is tied to another module's: the merged "
            "weight cannot be sent to vLLM under one tied name; leave this module out of "
            "model.lora_target_modules"
        )
    with gathered(list(layer.parameters())):
        merged = {name: _owned(p) for name, p in base_layer.named_parameters(recurse=False)}
        if not layer.disable_adapters:
            for adapter in layer.active_adapters:
                if adapter in layer.merged_adapters:
                    continue  # already part of the base weight (peft's own merge_adapter)
                _fold_adapter(layer, adapter, merged)
    yield from ((prefix + name, tensor) for name, tensor in merged.items())


def _fold_adapter(layer: Any, adapter: str, merged: dict[str, torch.Tensor]) -> None:
    """``merged[weight] += ΔW`` (and the bias for ``lora_bias``) with the rounding of peft's
    default merge (``merge_and_unload()``), so the two give the same bits."""
    if adapter not in layer.lora_A and adapter not in layer.lora_embedding_A:
        return  # this adapter does not touch this layer
    if adapter in layer.lora_variant:
        # DoRA and the other variants merge through layer state (they re-read the base weight and
        # cache norms on the layer), so they cannot be folded into a copy without touching it.
        raise ValueError(
            f"adapter {adapter!r} is a LoRA variant ({type(layer.lora_variant[adapter]).__name__}): "
            "only plain LoRA can be merged for the vLLM weight sync (use rollout.engine=hf)"
        )
    with torch.no_grad():
        weight = merged["weight"]  # [out, in] (linear) / [vocab, hidden] (embedding)
        delta = layer.get_delta_weight(adapter)  # same shape; fp32 when peft keeps adapters in fp32
        if adapter in layer.lora_embedding_A:
            delta = delta.to(weight.dtype)  # peft's embedding merge rounds ΔW first
        # Added in the wider dtype and rounded once, as peft's in-place ``W += ΔW`` does.
        merged["weight"] = (weight + delta).to(weight.dtype)
        if layer.lora_bias.get(adapter, False):
            bias = merged["bias"]  # [out]
            merged["bias"] = (bias + layer.lora_B[adapter].bias * layer.scaling[adapter]).to(bias.dtype)
