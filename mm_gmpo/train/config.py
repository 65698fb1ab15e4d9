"""Run configuration: dataclasses with a help text per field, YAML plus dotted overrides.

``mm-gmpo train configs/x.yaml optim.lr=1e-6 loss.name=grpo`` loads the YAML, applies the
overrides (values parsed as YAML scalars), builds the dataclasses and validates once; every
error names the offending field (``optim.lr``), never a stack frame deep in the loop.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config problem; the message names the field."""


def _f(default: Any, help: str, **kw: Any) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class ModelConfig:
    path: str = _f(
        "tiny:qwen2", "HF hub id, local directory, or 'tiny:qwen2' / 'tiny:qwen2_5_vl' (built locally)"
    )
    dtype: str = _f("auto", "auto (bf16 on CUDA, fp32 on CPU), bf16, fp16 or fp32")
    gradient_checkpointing: bool = _f(False, "recompute activations in backward to save memory")
    trust_remote_code: bool = _f(False, "let transformers run model code shipped with the checkpoint")
    tiny_overrides: dict = _f({}, "config overrides for a tiny:* model (e.g. hidden_size)")
    min_pixels: int | None = _f(None, "VL: min image pixels for the processor; None: the checkpoint's")
    max_pixels: int | None = _f(None, "VL: max image pixels for the processor; None: the checkpoint's")
    freeze_vision_tower: bool = _f(False, "VL: freeze the vision tower and its patch merger")
    lora_rank: int = _f(0, "LoRA adapter rank (peft); 0: full fine-tuning")
    lora_alpha: float = _f(16.0, "LoRA scaling numerator (the update is scaled by lora_alpha / lora_rank)")
    lora_dropout: float = _f(
        0.0,
        "dropout on the LoRA input; keep 0 for RL (it makes the trainer's log-probs differ from the sampler's)",
    )
    lora_target_modules: list = _f(
        [],
        "names (or name suffixes) of the linear layers that get adapters; empty: every linear layer of "
        "the language model. VL: the vision tower only when model.freeze_vision_tower=false",
    )


@dataclass
class DataConfig:
    train: str = _f(
        "synthetic:arithmetic", "jsonl/parquet/arrow path, HF dataset id, or synthetic:arithmetic"
    )
    eval: str = _f("", "held-out set (same forms as train); empty: none")
    question_key: str = _f("problem", "field holding the question")
    answer_key: str = _f("answer", "field holding the ground truth")
    template: str = _f("qwen_math", "prompt template: qwen_math, r1_distill, r1, none, geometry, vl_short")
    chat_template: str = _f(
        "",
        "text path: a Jinja chat-template file that replaces the tokenizer's own for chat templates "
        "(qwen_math, r1_distill); empty: the checkpoint's",
    )
    max_prompt_len: int = _f(1024, "prompts longer than this (tokens) are refused or skipped, never cut")
    max_images_per_prompt: int = _f(
        4,
        "VL: most images one prompt may carry; more is a bad record (refused or skipped); vLLM's limit_mm_per_prompt",
    )
    on_bad_record: str = _f("skip", "error: stop with a message naming the record; skip: count, log, go on")
    synthetic_train_size: int = _f(2000, "records in a synthetic training set")
    synthetic_eval_size: int = _f(200, "records in a synthetic held-out set")
    eval_limit: int = _f(0, "evaluate on at most this many held-out records (0: all)")


@dataclass
class RolloutConfig:
    engine: str = _f("hf", "hf (transformers generate) or vllm")
    n: int = _f(8, "responses per prompt (the group size G)")
    temperature: float = _f(1.0, "sampling temperature (also applied in the trainer's log-probs)")
    top_p: float = _f(1.0, "nucleus sampling")
    max_new_tokens: int = _f(3000, "response length limit; a response that hits it is truncated (reward 0)")
    batch_size: int = _f(64, "prompts per generate() call")
    gpu_memory_utilization: float = _f(0.35, "vLLM: fraction of GPU memory for the engine")
    vllm_tp: int = _f(1, "vLLM: tensor-parallel size (1 when colocated, one engine per rank)")
    vllm_enforce_eager: bool | None = _f(None, "vLLM: no CUDA graphs/compile; None: True on CPU")
    vllm_sleep_level: int = _f(1, "vLLM: sleep level while training (1: weights to host, 2: dropped)")
    sync_check_every: int = _f(
        0, "vLLM: every N weight syncs, check engine log-probs equal the trainer's (0: off)"
    )


@dataclass
class LossConfig:
    name: str = _f(
        "gmpo",
        "loss from the registry: gmpo, gmpo_noclip, gmpo_seqclip, gmpo_nonorm, grpo, dr_grpo, dapo, gspo",
    )
    clip_low: float | None = _f(
        None, "lower clip (log space for gmpo*, ratio space otherwise); None: the loss's default"
    )
    clip_high: float | None = _f(None, "upper clip; None: the loss's default")
    kl_coef: float = _f(0.0, "KL-to-reference coefficient (k3); 0 as in the paper")
    adv_std_normalize: bool | None = _f(None, "divide advantages by the group std; None: True except dr_grpo")
    filter_zero_variance: bool = _f(False, "drop groups whose rewards are all equal (DAPO dynamic sampling)")
    tis_cap: float = _f(
        0.0,
        "truncated importance weights min(pi_old/pi_sampler, cap) for the sampler/trainer mismatch; "
        "one weight per sequence (geometric mean of the token weights) scales the advantage (0: off)",
    )


@dataclass
class OptimConfig:
    lr: float = _f(1e-6, "peak learning rate (AdamW)")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    betas: list = _f([0.9, 0.999], "AdamW betas")
    grad_clip: float = _f(1.0, "max global gradient norm (0: off)")
    scheduler: str = _f("constant", "constant or cosine")
    warmup_steps: int = _f(0, "linear warm-up, in optimizer steps")


@dataclass
class RewardConfig:
    kind: str = _f("math", "math (accuracy 1/0) or geometry (accuracy + format)")
    accuracy_weight: float = _f(0.9, "geometry: weight of accuracy")
    format_weight: float = _f(0.1, "geometry: weight of the <think>/\\boxed{} format")
    timeout_s: float = _f(5.0, "hard limit per verification (worker killed)")
    num_workers: int = _f(2, "verifier worker processes")


@dataclass
class WarmStartConfig:
    steps: int = _f(0, "supervised steps on the ground-truth answers before RL (demo only; 0: none)")
    lr: float = _f(1e-3, "learning rate of the warm-start")
    batch_size: int = _f(32, "records per warm-start step")


@dataclass
class TrainConfig:
    output_dir: str = _f("runs/demo", "where metrics, checkpoints and plots go")
    seed: int = _f(0, "seed for model init, data order and sampling")
    base_seed: int | None = _f(
        None,
        "seed of what exists before RL: a tiny:* model's weights, synthetic data sets, the warm-start; "
        "None: train.seed. Fix it to run several RL seeds from one starting policy",
    )

    @property
    def start_seed(self) -> int:
        """The seed of the starting policy and data (``base_seed``, else ``seed``)."""
        return self.seed if self.base_seed is None else self.base_seed

    steps: int = _f(100, "RL steps (one rollout batch each)")
    prompts_per_step: int = _f(16, "prompts per RL step (global, over all ranks)")
    ppo_epochs: int = _f(1, "passes over each rollout batch (K)")
    mini_batches: int = _f(1, "optimizer steps per pass (the rollout batch is cut into this many)")
    reuse_update_logp: bool = _f(
        True,
        "with one optimizer step per rollout batch (ppo_epochs=1, mini_batches=1) take π_old from the "
        "update's own forward (detached) instead of a separate no-grad pass: same loss and gradients, "
        "one forward fewer per step",
    )
    micro_batch_size: int = _f(8, "sequences per forward/backward")
    logit_chunk: int = _f(
        256, "response positions per chunk of LM head + log-softmax in the update (0: full [B, R, V] logits)"
    )
    micro_batch_tokens: int = _f(
        0,
        "token budget per micro-batch (padded prompt+response positions); rows sorted by length and packed under it (0: off, micro_batch_size rows each)",
    )
    engine: str = _f("torch", "torch (one process) or deepspeed")
    zero_stage: int = _f(2, "DeepSpeed ZeRO stage 0-3")
    offload: bool = _f(False, "DeepSpeed: optimizer states on the CPU (ZeRO 1-3)")
    save_every: int = _f(0, "checkpoint every N steps (0: only at the end)")
    keep_checkpoints: int = _f(2, "how many recent checkpoints to keep")
    resume: str | None = _f(
        None,
        "unset (the default): continue the newest checkpoint in output_dir when output_dir holds this "
        "same run (its saved config.yaml matches), start fresh in an empty output_dir, and stop with "
        "an error when output_dir holds a run with a different config. Given explicitly (YAML or "
        "command line): auto: continue the newest checkpoint even if the config changed; never: "
        "start from model.path; or a checkpoint path",
    )
    eval_every: int = _f(0, "evaluate on the held-out set every N steps (0: before and after only)")
    log_tensorboard: bool = _f(True, "write tensorboard event files")
    log_wandb: bool = _f(False, "log to wandb (needs the wandb extra)")
    progress: bool = _f(True, "show a progress bar")


@dataclass
class Config:
    modality: str = _f("text", "text or vl: which policy path serves the run (mm_gmpo.policy_paths)")
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    warm_start: WarmStartConfig = field(default_factory=WarmStartConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------- loading
def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.field=value")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {key}: cannot parse value {raw!r}: {exc}") from None
    return key.strip().split("."), value


def _set_dotted(tree: dict, keys: list[str], value: Any) -> None:
    node = tree
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {'.'.join(keys)}: {k} is not a section")
    node[keys[-1]] = value


def _check_type(name: str, value: Any, annotation: Any) -> Any:
    """Coerce the few safe cases (int -> float) and refuse the rest with the field's name."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        for opt in options:
            if opt is type(None):
                continue
            try:
                return _check_type(name, value, opt)
            except ConfigError:
                continue
        raise ConfigError(f"{name}: expected {annotation}, got {value!r}")
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-6" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is str:
        if isinstance(value, str):
            return value
    elif annotation in (list, dict) or origin in (list, dict):
        if isinstance(value, origin or annotation):
            return value
    else:
        return value
    raise ConfigError(f"{name}: expected {getattr(annotation, '__name__', annotation)}, got {value!r}")


# Keys that were renamed: the old spelling gets an error naming the new one.
RENAMED = {"path": "modality"}


def _build(cls: type, tree: dict, prefix: str) -> Any:
    if not isinstance(tree, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {tree!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if not prefix and key in RENAMED:
            raise ConfigError(
                f"config field {key} was renamed to {RENAMED[key]} (write {RENAMED[key]}: {value})"
            )
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
            raise ConfigError(f"unknown config field {dotted}{hint}")
        ftype = typing.get_type_hints(cls)[key]
        if dataclasses.is_dataclass(ftype):
            kwargs[key] = _build(ftype, value or {}, f"{dotted}.")
        else:
            kwargs[key] = _check_type(dotted, value, ftype)
    return cls(**kwargs)


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def _check_chat_template(cfg: Config) -> None:
    """A replacement chat template is a readable file, and only the text path reads it."""
    path = cfg.data.chat_template
    if not path:
        return
    _require(cfg.modality == "text", "data.chat_template: only the text path reads it (modality: text)")
    _require(Path(path).expanduser().is_file(), f"data.chat_template: no such file: {path}")


def validate(cfg: Config) -> Config:
    """Cross-field checks, all in one place."""
    from mm_gmpo.objective import LOSSES
    from mm_gmpo.policy_paths import POLICY_PATHS

    _require(
        cfg.modality in POLICY_PATHS,
        f"modality: must be one of {', '.join(POLICY_PATHS)}, got {cfg.modality!r}",
    )
    _require(
        cfg.loss.name in LOSSES, f"loss.name: {cfg.loss.name!r} is not one of {', '.join(sorted(LOSSES))}"
    )
    for side, v in (("clip_low", cfg.loss.clip_low), ("clip_high", cfg.loss.clip_high)):
        _require(v is None or v >= 0, f"loss.{side}: must be >= 0, got {v}")
    _require(cfg.rollout.engine in ("hf", "vllm"), f"rollout.engine: hf or vllm, got {cfg.rollout.engine!r}")
    _require(cfg.loss.tis_cap >= 0, f"loss.tis_cap: must be >= 0, got {cfg.loss.tis_cap}")
    min_group = LOSSES[cfg.loss.name].min_group_size
    _require(
        cfg.rollout.n >= min_group,
        f"rollout.n={cfg.rollout.n}: loss.name={cfg.loss.name} compares each response with the other "
        f"responses to its prompt, so it needs rollout.n >= {min_group} (with fewer every advantage "
        "is 0 and nothing trains)",
    )
    _require(cfg.rollout.max_new_tokens >= 1, "rollout.max_new_tokens: must be >= 1")
    _require(0 < cfg.rollout.top_p <= 1, f"rollout.top_p: must be in (0, 1], got {cfg.rollout.top_p}")
    _require(cfg.rollout.temperature > 0, "rollout.temperature: must be > 0 for RL sampling")
    _require(cfg.optim.lr > 0, f"optim.lr: must be > 0, got {cfg.optim.lr}")
    _require(cfg.optim.scheduler in ("constant", "cosine"), "optim.scheduler: constant or cosine")
    _require(len(cfg.optim.betas) == 2, "optim.betas: two numbers")
    _require(cfg.data.on_bad_record in ("error", "skip"), "data.on_bad_record: error or skip")
    _require(cfg.data.max_prompt_len >= 1, "data.max_prompt_len: must be >= 1")
    _check_chat_template(cfg)
    _require(cfg.data.max_images_per_prompt >= 1, "data.max_images_per_prompt: must be >= 1")
    _require(cfg.reward.kind in ("math", "geometry"), "reward.kind: math or geometry")
    _validate_lora(cfg.model)
    t = cfg.train
    _require(t.steps >= 0, "train.steps: must be >= 0")
    _require(t.prompts_per_step >= 1, "train.prompts_per_step: must be >= 1")
    _require(t.ppo_epochs >= 1, "train.ppo_epochs: must be >= 1")
    _require(t.mini_batches >= 1, "train.mini_batches: must be >= 1")
    _require(t.micro_batch_size >= 1, "train.micro_batch_size: must be >= 1")
    _require(t.logit_chunk >= 0, f"train.logit_chunk: must be >= 0 (0: off), got {t.logit_chunk}")
    _require(t.micro_batch_tokens >= 0, f"train.micro_batch_tokens: must be >= 0, got {t.micro_batch_tokens}")
    _require(t.engine in ("torch", "deepspeed"), f"train.engine: torch or deepspeed, got {t.engine!r}")
    _require(t.zero_stage in (0, 1, 2, 3), "train.zero_stage: 0, 1, 2 or 3")
    _require(
        not t.offload or (t.engine == "deepspeed" and t.zero_stage >= 1),
        "train.offload: needs train.engine=deepspeed and train.zero_stage 1-3",
    )
    _require(
        t.resume in (None, "auto", "never") or Path(t.resume).exists(),
        f"train.resume: auto, never, or an existing checkpoint path (got {t.resume!r})",
    )
    rollouts = t.prompts_per_step * cfg.rollout.n
    _require(
        rollouts >= t.mini_batches,
        f"train.mini_batches ({t.mini_batches}) cannot exceed the {rollouts} rollouts per step "
        f"(train.prompts_per_step x rollout.n)",
    )
    return cfg


def _validate_lora(m: ModelConfig) -> None:
    """What can be checked without a model; target names are checked against it (mm_gmpo.lora)."""
    _require(m.lora_rank >= 0, f"model.lora_rank: must be >= 0 (0: full fine-tuning), got {m.lora_rank}")
    _require(m.lora_alpha > 0, f"model.lora_alpha: must be > 0, got {m.lora_alpha}")
    _require(0 <= m.lora_dropout < 1, f"model.lora_dropout: must be in [0, 1), got {m.lora_dropout}")
    targets = m.lora_target_modules
    _require(
        all(isinstance(t, str) and t for t in targets),
        f"model.lora_target_modules: a list of module names, got {targets!r}",
    )


def validate_world(cfg: Config, world_size: int) -> None:
    """Batch arithmetic against the number of ranks: whole prompt groups per rank, a rollout per mini-batch."""
    t = cfg.train
    _require(world_size >= 1, f"world size must be >= 1, got {world_size}")
    _require(
        t.prompts_per_step % world_size == 0,
        f"train.prompts_per_step={t.prompts_per_step} must divide by the world size {world_size} "
        "(each rank takes whole prompt groups)",
    )
    _require(
        t.engine != "torch" or world_size == 1,
        f"train.engine=torch runs in one process, not {world_size}; use train.engine=deepspeed with torchrun",
    )
    per_rank = t.prompts_per_step // world_size * cfg.rollout.n
    _require(
        per_rank >= t.mini_batches,
        f"train.mini_batches={t.mini_batches} exceeds the {per_rank} rollouts each of {world_size} ranks "
        "gets per step",
    )


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """YAML file (optional) + ``section.field=value`` overrides -> a validated :class:`Config`."""
    tree: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            tree = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {p} is not valid YAML: {exc}") from None
    for item in overrides or []:
        keys, value = _parse_override(item)
        _set_dotted(tree, keys, value)
    return validate(_build(Config, tree, ""))


def describe() -> str:
    """Every field with its default and help text (``mm-gmpo config``)."""
    lines = []

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], f"{prefix}{f.name}.")
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            lines.append(f"{prefix}{f.name} = {default!r}    # {f.metadata.get('help', '')}")

    walk(Config, "")
    return "\n".join(lines)
