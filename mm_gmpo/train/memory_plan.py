"""Per-GPU memory plan of a training run, from its config alone: no GPU, no download, no model.

Why: at the paper's shapes (7B, 1024 + 3000 tokens, a 151,936-token vocabulary, 8 GPUs) what
decides whether a run fits is not the loss but the model states, the activations of the longest
micro-batch, the vocabulary-wide log-prob tensors and the colocated vLLM engine. A run that does
not fit fails after minutes of start-up and model loading; the dry run says so up front, names
the biggest part and the setting that shrinks it.

The parts, each in bytes per GPU:

* model states: weights, gradients and optimizer states per engine, ZeRO stage and offload;
  DeepSpeed's own estimators for ZeRO-2 and ZeRO-3 with mixed precision (what they assume),
  closed forms elsewhere (the ``how`` column says which);
* activations: what autograd keeps for backward in the longest micro-batch, per decoder layer
  from the model's shape (see :func:`layer_saved_bytes_per_token`), or with gradient
  checkpointing each layer's input plus one layer recomputed in backward;
* vision tower (VL path): the same for the vision blocks, per image patch;
* log-probs: the vocabulary-wide tensors alive at once in the log-prob step, either the full
  [B, R, V] path or one chunk of ``train.logit_chunk`` response positions;
* rollout: vLLM's reservation (``rollout.gpu_memory_utilization`` of the GPU, colocated; it sleeps
  during the update) or the KV cache of transformers' ``generate``;
* runtime: CUDA context, communication buffers and DeepSpeed's gradient bucket (rough).

Two phases share the GPU: rollout (model states + engine) and update (model states + activations
+ log-probs). The plan's peak is the larger. Sizes are GiB (2**30 bytes) throughout.

The activation and log-prob formulas were checked against measured CPU runs of a tiny Qwen2 with
the real vocabulary (tests/train/test_memory_plan.py, bench/NOTES.md).
"""

from __future__ import annotations

import contextlib
import io
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mm_gmpo.train.config import Config

GIB = 2**30

# Parts of the runtime no formula here sees: CUDA context and NCCL buffers, per GPU (rough).
RUNTIME_BASE_BYTES = 1 * GIB
# DeepSpeed's default ZeRO-1/2 gradient reduce bucket (``reduce_bucket_size``, elements).
DS_REDUCE_BUCKET_ELEMENTS = 500_000_000


# ---------------------------------------------------------------- model shapes
@dataclass(frozen=True)
class VisionShape:
    """A Qwen2.5-VL vision tower: ViT blocks over 14x14 patches, then a 2x2 patch merger."""

    depth: int
    hidden: int
    intermediate: int
    heads: int
    out_hidden: int
    patch: int = 14
    merge: int = 2
    temporal_patch: int = 2
    in_channels: int = 3

    def params(self) -> int:
        h, i = self.hidden, self.intermediate
        patch_embed = self.in_channels * self.temporal_patch * self.patch**2 * h  # Conv3d, no bias
        block = 2 * h + (h * 3 * h + 3 * h) + (h * h + h) + 2 * (h * i + i) + (i * h + h)
        merged = h * self.merge**2
        merger = h + (merged * merged + merged) + (merged * self.out_hidden + self.out_hidden)
        return patch_embed + self.depth * block + merger


@dataclass(frozen=True)
class ModelShape:
    """The numbers the plan needs from a model's config (Qwen2-style decoder, optional vision)."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tied_embeddings: bool
    head_dim: int = 0  # 0: hidden / heads
    vision: VisionShape | None = None
    source: str = ""

    @property
    def hd(self) -> int:
        return self.head_dim or self.hidden // self.heads

    @property
    def q_dim(self) -> int:
        return self.heads * self.hd

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.hd

    def text_params(self) -> int:
        """Qwen2: q/k/v with bias, o without, SwiGLU MLP, RMSNorm weights, untied or tied head."""
        h, q, kv, i = self.hidden, self.q_dim, self.kv_dim, self.intermediate
        layer = (h * q + q) + 2 * (h * kv + kv) + q * h + 3 * h * i + 2 * h
        embed = self.vocab * h
        return embed * (1 if self.tied_embeddings else 2) + self.layers * layer + h

    def vision_params(self) -> int:
        return self.vision.params() if self.vision is not None else 0

    def lora_params(self, rank: int) -> int:
        """LoRA's default targets (every linear layer of the language model): r * (in + out) each."""
        h, q, kv, i = self.hidden, self.q_dim, self.kv_dim, self.intermediate
        per_layer = (h + q) + 2 * (h + kv) + (q + h) + 2 * (h + i) + (i + h)
        return self.layers * rank * per_layer

    def params(self) -> int:
        return self.text_params() + self.vision_params()

    def largest_layer_params(self) -> int:
        """Parameters of the largest single module (what ZeRO-3 gathers at once): the embedding."""
        return max(self.vocab * self.hidden, self.hidden * self.intermediate + self.intermediate)


# The paper's models, for hub ids that have no local config.json (there is no network here).
# Numbers from each checkpoint's config.json on the Hugging Face hub:
#   Qwen/Qwen2.5-Math-1.5B  https://huggingface.co/Qwen/Qwen2.5-Math-1.5B/blob/main/config.json
#     (as mirrored at https://huggingface.co/unsloth/Qwen2.5-Math-1.5B/blob/main/config.json):
#     hidden 1536, intermediate 8960, 28 layers, 12 heads, 2 KV heads, vocab 151936, tied.
#   Qwen/Qwen2.5-Math-7B  https://huggingface.co/Qwen/Qwen2.5-Math-7B/blob/main/config.json
#     (mirrored at https://huggingface.co/unsloth/Qwen2.5-Math-7B/blob/main/config.json):
#     hidden 3584, intermediate 18944, 28 layers, 28 heads, 4 KV heads, vocab 152064, untied.
#   deepseek-ai/DeepSeek-R1-Distill-Qwen-7B
#     https://huggingface.co/deepseek-ai/DeepSeek-R1-Distill-Qwen-7B/blob/main/config.json:
#     the same shape as Qwen2.5-Math-7B (hidden 3584, intermediate 18944, 28/28/4, vocab 152064).
#   Qwen/Qwen2.5-VL-7B-Instruct
#     https://huggingface.co/Qwen/Qwen2.5-VL-7B-Instruct/blob/main/config.json: text as above,
#     vocab 152064, untied; vision_config sets hidden_size 1280 and leaves depth 32,
#     intermediate_size 3420, num_heads 16, out_hidden_size 3584, patch 14, merge 2 to the
#     transformers Qwen2_5_VLVisionConfig defaults.
# Parameter counts follow from the shapes (ModelShape.params; a test checks them against the
# transformers models built on the meta device): 1,543,714,304 / 7,615,616,512 / 7,615,616,512 /
# 8,292,166,656.
_QWEN_7B_TEXT = dict(
    hidden=3584, intermediate=18944, layers=28, heads=28, kv_heads=4, vocab=152064, tied_embeddings=False
)
PAPER_MODELS: dict[str, ModelShape] = {
    "Qwen/Qwen2.5-Math-1.5B": ModelShape(
        hidden=1536,
        intermediate=8960,
        layers=28,
        heads=12,
        kv_heads=2,
        vocab=151936,
        tied_embeddings=True,
        source="built-in table (hub config.json)",
    ),
    "Qwen/Qwen2.5-Math-7B": ModelShape(**_QWEN_7B_TEXT, source="built-in table (hub config.json)"),
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B": ModelShape(
        **_QWEN_7B_TEXT, source="built-in table (hub config.json)"
    ),
    "Qwen/Qwen2.5-VL-7B-Instruct": ModelShape(
        **_QWEN_7B_TEXT,
        vision=VisionShape(depth=32, hidden=1280, intermediate=3420, heads=16, out_hidden=3584),
        source="built-in table (hub config.json)",
    ),
}


def shape_from_hf_config(config: Any, source: str) -> ModelShape:
    """A ``ModelShape`` from a transformers config object (text or Qwen2.5-VL)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    vision = None
    vc = getattr(config, "vision_config", None)
    if vc is not None:
        vision = VisionShape(
            depth=int(vc.depth),
            hidden=int(vc.hidden_size),
            intermediate=int(vc.intermediate_size),
            heads=int(vc.num_heads),
            out_hidden=int(getattr(vc, "out_hidden_size", text.hidden_size)),
            patch=int(getattr(vc, "patch_size", 14)),
            merge=int(getattr(vc, "spatial_merge_size", 2)),
            temporal_patch=int(getattr(vc, "temporal_patch_size", 2)),
            in_channels=int(getattr(vc, "in_channels", 3)),
        )
    heads = int(text.num_attention_heads)
    tied = getattr(config, "tie_word_embeddings", None)
    if tied is None:
        tied = getattr(text, "tie_word_embeddings", False)
    return ModelShape(
        hidden=int(text.hidden_size),
        intermediate=int(text.intermediate_size),
        layers=int(text.num_hidden_layers),
        heads=heads,
        kv_heads=int(getattr(text, "num_key_value_heads", None) or heads),
        vocab=int(text.vocab_size),
        tied_embeddings=bool(tied),
        head_dim=int(getattr(text, "head_dim", None) or 0),
        vision=vision,
        source=source,
    )


def model_shape(model_path: str, tiny_overrides: dict | None = None) -> tuple[ModelShape | None, str]:
    """The shape of ``model.path`` and where it came from; (None, why) when it is unknown.

    A ``tiny:*`` model: the config its builder would save. A local directory: its config.json
    (transformers fills the defaults). A hub id: the built-in table of the paper's models.
    """
    if model_path.startswith("tiny:"):
        from mm_gmpo.testing import tiny_qwen2_5_vl_config, tiny_qwen2_config

        builders = {"qwen2": tiny_qwen2_config, "qwen2_5_vl": tiny_qwen2_5_vl_config}
        kind = model_path.split(":", 1)[1]
        if kind not in builders:
            return None, f"unknown tiny model {model_path!r}"
        config = builders[kind](**(tiny_overrides or {}))
        return shape_from_hf_config(config, f"{model_path} builder config"), ""
    local = Path(model_path)
    if (local / "config.json").is_file():
        try:
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(local)
            return shape_from_hf_config(config, f"{local / 'config.json'}"), ""
        except Exception as exc:  # an unreadable or unfamiliar config: say so, plan the rest
            return None, f"{local / 'config.json'} could not be read ({type(exc).__name__}: {exc})"
    if model_path in PAPER_MODELS:
        return PAPER_MODELS[model_path], ""
    if local.exists():
        return None, f"{model_path} has no config.json"
    return None, f"{model_path!r} is neither a local model directory nor in the built-in table"


# ---------------------------------------------------------------- model states
@dataclass(frozen=True)
class ModelStates:
    gpu_bytes: int
    how: str


def _deepspeed_estimators() -> tuple[Any, Any] | None:
    """DeepSpeed's ZeRO-2/3 model-state estimators, or None when DeepSpeed cannot be imported.

    Imported lazily. On import DeepSpeed binds its log handler to the current stdout and logs
    its accelerator choice there, which would land in the dry run's YAML: the import runs with
    stdout captured, the captured lines go to stderr and the handler back to the real stdout.
    """
    if "deepspeed" in sys.modules:
        captured = None
    else:
        captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured or sys.stdout):
            from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
            from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs
    except Exception:  # not installed, or broken on this machine: the closed form stands in
        return None
    finally:
        if captured is not None:
            _rebind_deepspeed_log(captured)
    return estimate_zero2_model_states_mem_needs, estimate_zero3_model_states_mem_needs


def _rebind_deepspeed_log(captured: io.StringIO) -> None:
    import logging

    for name in ("DeepSpeed", "deepspeed"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is captured:
                handler.setStream(sys.stdout)
    if captured.getvalue():
        sys.stderr.write(captured.getvalue())


def _mixed_precision_closed_form(
    trainable: int, largest_layer: int, zero_stage: int, offload: bool, n: int
) -> float:
    """Per-GPU bytes of the trainable parameters' states under bf16/fp16 mixed precision.

    Stages 2 and 3 reproduce DeepSpeed's estimators: 16-bit weights (ZeRO-2 whole, ZeRO-3
    partitioned plus the largest layer gathered in 32 bits) and 18 bytes per parameter over the
    ranks (16-bit and fp32 gradients, fp32 master weights, Adam's m and v); with optimizer
    offload only the 16-bit weights stay. Stage 1 keeps whole 16-bit gradients, stage 0 is
    DeepSpeed's BF16_Optimizer (fp32 gradients whole, master weights and Adam partitioned).
    """
    p = trainable
    if zero_stage == 3:
        return 4 * largest_layer + (2 if offload else 18) * p / n
    if zero_stage == 2:
        return 2 * p + (0 if offload else 18 * p / n)
    if zero_stage == 1:
        return 2 * p + 2 * p + (0 if offload else 16 * p / n)
    return 2 * p + 2 * p + 4 * p + 12 * p / n


def model_states(
    params: int,
    trainable: int,
    largest_layer: int,
    *,
    engine: str,
    zero_stage: int,
    offload: bool,
    world: int,
    weight_bytes: int,
) -> ModelStates:
    """Weights, gradients and optimizer states per GPU.

    bf16/fp16 on DeepSpeed ZeRO-2/3: DeepSpeed's own estimators, which assume mixed-precision
    Adam (the closed form of :func:`_mixed_precision_closed_form` when DeepSpeed cannot be
    imported; the two agree). Frozen parameters (no gradients, no optimizer state) are added as
    16-bit weights. Other stages, fp32 and the torch engine: closed forms.
    """
    frozen = params - trainable
    n = max(1, world)
    off = ", optimizer offloaded" if offload else ""
    if engine != "deepspeed":
        # torch engine: weights, gradients and AdamW's m and v all in the model's dtype
        gpu = weight_bytes * (params + 3 * trainable)
        return ModelStates(int(gpu), f"torch engine: weights, grads, AdamW m+v at {weight_bytes} B")
    if weight_bytes == 4:
        weights = 4 * params / (n if zero_stage == 3 else 1)
        grads = 4 * trainable / (n if zero_stage >= 2 else 1)
        optim = 0 if offload else 8 * trainable / (n if zero_stage >= 1 else 1)
        return ModelStates(
            int(weights + grads + optim), f"ZeRO-{zero_stage} over {n}, fp32 Adam: closed form{off}"
        )
    frozen_bytes = 2 * frozen / (n if zero_stage == 3 else 1)
    estimators = _deepspeed_estimators() if zero_stage in (2, 3) else None
    if estimators is None:
        gpu = _mixed_precision_closed_form(trainable, largest_layer, zero_stage, offload, n) + frozen_bytes
        why = " (DeepSpeed not importable)" if zero_stage in (2, 3) else ""
        return ModelStates(int(gpu), f"ZeRO-{zero_stage} over {n}, mixed precision: closed form{why}{off}")
    est2, est3 = estimators
    if zero_stage == 2:
        _, gpu = est2(trainable, num_gpus_per_node=n, num_nodes=1, cpu_offload=offload)
    else:
        _, gpu, _ = est3(
            trainable,
            largest_layer,
            num_gpus_per_node=n,
            num_nodes=1,
            cpu_offload=offload,
            cpu_offload_params=False,
        )
    name = f"estimate_zero{zero_stage}_model_states_mem_needs"
    return ModelStates(int(gpu + frozen_bytes), f"ZeRO-{zero_stage} over {n}: DeepSpeed {name}{off}")


# ---------------------------------------------------------------- activations
def norm_saved_bytes(width: int, b: int) -> int:
    """RMSNorm as transformers runs it: float32 input copy (or the input itself), normalised and
    weighted outputs in the compute dtype, and one float32 rsqrt per token."""
    return 4 * width + 2 * b * width + 4


def layer_saved_bytes_per_token(shape: ModelShape, b: int) -> int:
    """Bytes autograd keeps per token for one decoder layer (no checkpointing).

    Two norms; attention keeps q and k after RoPE, v and the attention output (the o_proj input
    is a view of it; SDPA also keeps its float32 log-sum-exp per head, no [S, S] matrix); the
    SwiGLU MLP keeps gate, up, act(gate) and their product (the down_proj input).
    """
    attention = b * (2 * shape.q_dim + 2 * shape.kv_dim) + 4 * shape.heads
    mlp = 4 * b * shape.intermediate
    return 2 * norm_saved_bytes(shape.hidden, b) + attention + mlp


def text_activation_bytes(shape: ModelShape, tokens: int, b: int, checkpointing: bool) -> int:
    """Saved activations of the decoder for ``tokens`` positions, up to the final norm.

    With checkpointing each layer keeps only its input; backward recomputes one layer at a time,
    whose full set of activations then exists on top.
    """
    layer = layer_saved_bytes_per_token(shape, b)
    rope = 2 * shape.hd * b  # cos and sin, shared by the layers
    final = norm_saved_bytes(shape.hidden, b)
    if checkpointing:
        per_token = shape.layers * b * shape.hidden + layer + final + rope
    else:
        per_token = shape.layers * layer + final + rope
    return per_token * tokens


def vision_block_saved_bytes_per_patch(vision: VisionShape, b: int) -> int:
    """One vision block per patch: two norms; attention keeps the fused qkv output (v is a view of
    it), q and k after RoPE, the attention output and the proj input; then the SwiGLU MLP."""
    attention = 7 * b * vision.hidden + 4 * vision.heads
    return 2 * norm_saved_bytes(vision.hidden, b) + attention + 4 * b * vision.intermediate


def vision_outside_blocks_bytes_per_patch(vision: VisionShape, b: int) -> int:
    """The patch embedding's input pixels, the merger (norm, MLP hidden) and RoPE (float32)."""
    pixels = b * vision.in_channels * vision.temporal_patch * vision.patch**2
    merger = norm_saved_bytes(vision.hidden, b) + 2 * b * vision.hidden
    rope = 2 * 4 * (vision.hidden // vision.heads)
    return pixels + merger + rope


def vision_activation_bytes(
    vision: VisionShape, patches: int, b: int, checkpointing: bool, frozen: bool
) -> int:
    """Saved activations of the vision tower for ``patches`` patches (a frozen tower keeps none:
    one block's working set exists while it runs)."""
    block = vision_block_saved_bytes_per_patch(vision, b)
    if frozen:
        return block * patches
    outside = vision_outside_blocks_bytes_per_patch(vision, b)
    if checkpointing:
        return (vision.depth * b * vision.hidden + block + outside) * patches
    return (vision.depth * block + outside) * patches


def logprob_bytes_per_element(b: int, temperature: float, chunked: bool) -> int:
    """Bytes per element of [rows, positions, V] alive at once in the log-prob step.

    Full path (``collate.response_logp_and_entropy`` on the model's logits): the logits, their
    float32 copy (divided by the temperature), the log-softmax kept for backward, and exp() of it
    times itself for the entropy; the float32 copy is the logits themselves in fp32 at T = 1.
    Chunked path (``train.logprobs``): the chunk's logits, their float32 scaled copy and the
    softmax for the entropy; its backward holds the logits, one float32 gradient and its cast.
    """
    own_copy = 4 if (b != 4 or temperature != 1.0) else 0
    if chunked:
        return b + own_copy + 4
    return b + own_copy + 12


# ---------------------------------------------------------------- the micro-batch
@dataclass(frozen=True)
class MicroBatch:
    """The longest micro-batch the update can see, and its vocabulary-wide log-prob block."""

    rows: int
    tokens: int  # padded prompt + response positions
    logit_rows: int  # the largest [rows, positions, V] block of the log-prob step
    logit_positions: int
    patches: int  # vision patches (VL path)
    description: str


def _image_tokens_floor(cfg: Any, shape: ModelShape) -> int:
    """Fewest prompt tokens a VL record can have: its image at ``model.min_pixels``."""
    if shape.vision is None:
        return 1
    v = shape.vision
    min_pixels = cfg.model.min_pixels or 56 * 56  # the Qwen2.5-VL processor's default
    return max(1, min_pixels // (v.patch * v.merge) ** 2)


def longest_micro_batch(cfg: Any, shape: ModelShape | None) -> MicroBatch:
    """Fixed micro-batches: ``micro_batch_size`` rows at the length limits. Token budget: the
    budget (or one row at the limits if longer). The log-prob block: chunked, one chunk of the
    micro-batch's flattened response tokens (:mod:`mm_gmpo.train.logprobs`), whatever the rows;
    full logits, [rows, response, V] with, under a budget, the worst packing (as many rows as fit
    with the shortest possible prompt).
    """
    t = cfg.train
    prompt, response = cfg.data.max_prompt_len, cfg.rollout.max_new_tokens
    chunk, budget = max(0, t.logit_chunk), max(0, t.micro_batch_tokens)
    per_row_positions = response
    patches_per_row = 0
    p_floor = 1
    if shape is not None and shape.vision is not None:
        v = shape.vision
        image_cap = (cfg.model.max_pixels or 12_845_056) // v.patch**2  # processor default max 12.8 Mpx
        patches_per_row = min(image_cap, v.merge**2 * prompt)
        p_floor = _image_tokens_floor(cfg, shape)
    if budget <= 0:
        rows = t.micro_batch_size
        return MicroBatch(
            rows=rows,
            tokens=rows * (prompt + response),
            logit_rows=1 if chunk else rows,
            logit_positions=min(chunk, rows * response) if chunk else per_row_positions,
            patches=rows * patches_per_row,
            description=f"{rows} x ({prompt} + {response}) tokens",
        )
    tokens = max(budget, prompt + response)
    rows = max(1, tokens // (prompt + response))
    logit_rows = 1 if chunk else max(1, tokens // (p_floor + per_row_positions))
    if chunk:
        per_row_positions = min(chunk, tokens)
    patches = 0
    if patches_per_row:
        v = shape.vision  # type: ignore[union-attr]
        patches = min(v.merge**2 * tokens, max(1, tokens // (p_floor + 1)) * patches_per_row)
    return MicroBatch(
        rows=rows,
        tokens=tokens,
        logit_rows=logit_rows,
        logit_positions=per_row_positions,
        patches=patches,
        description=f"{tokens}-token budget",
    )


# ---------------------------------------------------------------- the plan
@dataclass
class PlanRow:
    name: str
    phase: str  # "both", "rollout" or "update"
    nbytes: int | None  # None: unknown
    how: str
    knob: str = ""  # the setting that shrinks this part

    @property
    def gib(self) -> float | None:
        return None if self.nbytes is None else self.nbytes / GIB


@dataclass
class MemoryPlan:
    world: int
    gpu_mem_gib: float
    model: str
    shape: ModelShape | None
    micro_batch: MicroBatch | None
    rows: list[PlanRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def row(self, name: str) -> PlanRow:
        return next(r for r in self.rows if r.name == name)

    def phase_bytes(self, phase: str) -> int | None:
        parts = [r.nbytes for r in self.rows if r.phase in ("both", phase)]
        if any(p is None for p in parts):
            return None
        return sum(parts)  # type: ignore[arg-type]

    @property
    def peak_bytes(self) -> int | None:
        rollout, update = self.phase_bytes("rollout"), self.phase_bytes("update")
        if rollout is None or update is None:
            return None
        return max(rollout, update)

    @property
    def peak_phase(self) -> str:
        return (
            "rollout" if (self.phase_bytes("rollout") or 0) > (self.phase_bytes("update") or 0) else "update"
        )

    def fits(self) -> bool | None:
        peak = self.peak_bytes
        return None if peak is None else peak <= self.gpu_mem_gib * GIB

    def over_budget_message(self) -> str | None:
        """One line naming the phase, the biggest part of it and the setting to change."""
        if self.fits() is not False:
            return None
        phase = self.peak_phase
        parts = [r for r in self.rows if r.phase in ("both", phase) and r.knob and r.nbytes]
        if not parts:
            return (
                f"memory plan: the {phase} phase needs more than --gpu-mem {self.gpu_mem_gib:g} GiB per GPU"
            )
        top = max(parts, key=lambda r: r.nbytes or 0)
        return (
            f"memory plan: the {phase} phase needs {self.peak_bytes / GIB:.1f} GiB per GPU, over "  # type: ignore[operator]
            f"--gpu-mem {self.gpu_mem_gib:g} GiB; its largest part is {top.name} "
            f"({top.gib:.1f} GiB): {top.knob}"
        )


def _weight_bytes(dtype: str) -> int:
    # "auto" is bf16 on a GPU, which is what a per-GPU plan describes
    return {"fp32": 4, "bf16": 2, "fp16": 2, "auto": 2}.get(dtype, 2)


def plan_memory(cfg: Config, world: int = 1, gpu_mem_gib: float = 80.0) -> MemoryPlan:
    """The memory plan of ``cfg`` on ``world`` GPUs of ``gpu_mem_gib`` GiB each.

    The vision tower is planned when the model's own config has one (a VL model), whatever
    the run's modality.
    """
    shape, why = model_shape(cfg.model.path, cfg.model.tiny_overrides)
    plan = MemoryPlan(
        world=world, gpu_mem_gib=gpu_mem_gib, model=cfg.model.path, shape=shape, micro_batch=None
    )
    unknown = f"unknown: {why}"
    plan.rows.append(_states_row(cfg, shape, world, unknown))
    plan.rows.append(_rollout_row(cfg, shape, gpu_mem_gib, unknown))
    if shape is None:
        plan.rows.append(PlanRow("activations", "update", None, unknown))
        plan.rows.append(PlanRow("log-probs", "update", None, unknown))
    else:
        _add_update_rows(plan, cfg, shape)
    plan.rows.append(_runtime_row(cfg))
    if shape is None:
        plan.notes.append(f"model shape unknown ({why}): only the parts that do not need it are planned")
    return plan


def _states_row(cfg: Config, shape: ModelShape | None, world: int, unknown: str) -> PlanRow:
    """Parameters, gradients and optimizer states per GPU (DeepSpeed's estimators)."""
    if shape is None:
        return PlanRow("model states", "both", None, unknown)
    t = cfg.train
    total = shape.params()
    trainable = total - (shape.vision_params() if cfg.model.freeze_vision_tower else 0)
    lora = ""
    if cfg.model.lora_rank > 0:  # the base is frozen; only the adapters train
        trainable = shape.lora_params(cfg.model.lora_rank)
        total += trainable
        lora = f", LoRA rank {cfg.model.lora_rank}: {trainable / 1e6:.1f}M trainable (default targets)"
    states = model_states(
        total,
        trainable,
        shape.largest_layer_params(),
        engine=t.engine,
        zero_stage=t.zero_stage,
        offload=t.offload,
        world=world,
        weight_bytes=_weight_bytes(cfg.model.dtype),
    )
    return PlanRow(
        "model states",
        "both",
        states.gpu_bytes,
        f"{total / 1e9:.2f}B params{lora}; {states.how}",
        "train.zero_stage=3 (or train.offload=true) to partition/offload them",
    )


def _rollout_row(cfg: Config, shape: ModelShape | None, gpu_mem_gib: float, unknown: str) -> PlanRow:
    """The rollout engine's reservation: vLLM's share of the GPU, or generate's KV cache."""
    if cfg.rollout.engine == "vllm":
        util = cfg.rollout.gpu_memory_utilization
        return PlanRow(
            "vLLM (rollout)",
            "rollout",
            int(util * gpu_mem_gib * GIB),
            f"gpu_memory_utilization {util:g} x {gpu_mem_gib:g} GiB, colocated (asleep in the update)",
            "lower rollout.gpu_memory_utilization (a smaller KV cache)",
        )
    if shape is None:
        return PlanRow("generate KV cache", "rollout", None, unknown)
    rows = cfg.rollout.batch_size * cfg.rollout.n
    length = cfg.data.max_prompt_len + cfg.rollout.max_new_tokens
    kv = rows * length * 2 * shape.layers * shape.kv_dim * _weight_bytes(cfg.model.dtype)
    return PlanRow(
        "generate KV cache",
        "rollout",
        kv,
        f"transformers generate: {rows} sequences (rollout.batch_size x n) at full length",
        "lower rollout.batch_size",
    )


def _add_update_rows(plan: MemoryPlan, cfg: Config, shape: ModelShape) -> None:
    """Activations (and the vision tower's) and the log-prob part of the longest micro-batch."""
    t = cfg.train
    b = _weight_bytes(cfg.model.dtype)
    ckpt = bool(cfg.model.gradient_checkpointing)
    chunk = max(0, t.logit_chunk)
    mb = longest_micro_batch(cfg, shape)
    plan.micro_batch = mb
    act = text_activation_bytes(shape, mb.tokens, b, ckpt)
    plan.rows.append(
        PlanRow(
            "activations",
            "update",
            act,
            f"{mb.description}, {shape.layers} layers, " + ("checkpointed" if ckpt else "no checkpointing"),
            "lower train.micro_batch_tokens / train.micro_batch_size"
            if ckpt
            else "set model.gradient_checkpointing=true",
        )
    )
    if shape.vision is not None and mb.patches:
        v = shape.vision
        frozen = bool(cfg.model.freeze_vision_tower)
        plan.rows.append(
            PlanRow(
                "vision tower",
                "update",
                vision_activation_bytes(v, mb.patches, b, ckpt, frozen),
                f"{mb.patches} patches, {v.depth} blocks, "
                + ("frozen" if frozen else "checkpointed" if ckpt else "no checkpointing"),
                "lower model.max_pixels" if (ckpt or frozen) else "set model.gradient_checkpointing=true",
            )
        )
    per_elem = logprob_bytes_per_element(b, cfg.rollout.temperature, chunk > 0)
    lp_positions = mb.logit_rows * mb.logit_positions
    plan.rows.append(
        PlanRow(
            "log-probs",
            "update",
            lp_positions * shape.vocab * per_elem,
            (
                f"one chunk of the flattened response tokens: [{mb.logit_positions}, {shape.vocab}] x {per_elem} B"
                if chunk > 0
                else f"full [B, R, V] = [{mb.logit_rows}, {mb.logit_positions}, {shape.vocab}] x {per_elem} B"
            ),
            "lower train.logit_chunk" if chunk > 0 else "set train.logit_chunk=256 (chunked log-probs)",
        )
    )
    if t.micro_batch_tokens > 0 and mb.logit_rows > mb.rows:
        floor = _image_tokens_floor(cfg, shape)
        shortest = f"{floor}-token prompts (an image at model.min_pixels)" if floor > 1 else "1-token prompts"
        plan.notes.append(
            f"log-probs: a bound, the worst packing under the token budget ({mb.logit_rows} rows of "
            f"{shortest} and {mb.logit_positions}-token responses)"
        )


def _runtime_row(cfg: Config) -> PlanRow:
    """What the process holds besides tensors: the CUDA context, NCCL, DeepSpeed's buckets."""
    runtime = RUNTIME_BASE_BYTES
    how = "CUDA context, NCCL (rough)"
    if cfg.train.engine == "deepspeed" and cfg.train.zero_stage in (1, 2):
        runtime += DS_REDUCE_BUCKET_ELEMENTS * _weight_bytes(cfg.model.dtype)
        how += " + DeepSpeed reduce bucket"
    return PlanRow("runtime", "both", runtime, how)


def _fmt(nbytes: int | None) -> str:
    return "?" if nbytes is None else f"{nbytes / GIB:.1f}"


def render_plan(plan: MemoryPlan, width: int = 118) -> str:
    """The plan as a plain-text table (rich), then the phase totals and the verdict."""
    import io

    from rich.console import Console
    from rich.table import Table

    title = f"memory plan per GPU: {plan.model}, {plan.world} GPU(s) of {plan.gpu_mem_gib:g} GiB"
    table = Table(title=title, title_justify="left", box=None, pad_edge=False)
    table.add_column("part")
    table.add_column("phase")
    table.add_column("GiB", justify="right")
    table.add_column("how")
    for r in plan.rows:
        table.add_row(r.name, r.phase, _fmt(r.nbytes), r.how)
    table.add_section()
    for phase in ("rollout", "update"):
        table.add_row(f"= {phase} phase", "", _fmt(plan.phase_bytes(phase)), "")
    fits = plan.fits()
    verdict = {
        True: f"fits in {plan.gpu_mem_gib:g} GiB",
        False: f"does NOT fit in {plan.gpu_mem_gib:g} GiB",
        None: "cannot tell (see notes)",
    }[fits]
    table.add_row("= peak", plan.peak_phase if fits is not None else "", _fmt(plan.peak_bytes), verdict)
    buf = io.StringIO()
    Console(file=buf, width=width, no_color=True, force_terminal=False, highlight=False).print(table)
    lines = buf.getvalue().rstrip("\n").splitlines()
    lines += [f"note: {n}" for n in plan.notes]
    return "\n".join(line.rstrip() for line in lines)


def plan_summary(plan: MemoryPlan) -> dict[str, Any]:
    """The plan's numbers (GiB) by part and phase, for logs and tests."""
    out: dict[str, Any] = {r.name: None if r.nbytes is None else round(r.nbytes / GIB, 3) for r in plan.rows}
    for phase in ("rollout", "update"):
        v = plan.phase_bytes(phase)
        out[f"{phase}_phase"] = None if v is None else round(v / GIB, 3)
    out["fits"] = plan.fits()
    return out


__all__ = [
    "GIB",
    "PAPER_MODELS",
    "MemoryPlan",
    "MicroBatch",
    "ModelShape",
    "ModelStates",
    "PlanRow",
    "VisionShape",
    "layer_saved_bytes_per_token",
    "logprob_bytes_per_element",
    "longest_micro_batch",
    "model_shape",
    "model_states",
    "plan_memory",
    "plan_summary",
    "render_plan",
    "shape_from_hf_config",
    "text_activation_bytes",
    "vision_activation_bytes",
]
