"""The vision-language path: Qwen2.5-VL prompts with images, image-aware collation, mRoPE forward.

Same interface as :class:`mm_gmpo.text.path.TextPolicyPath` (``build_prompt``, ``collate``,
``forward``, ``decode``) so the loop, the objective, the engines and checkpoints are shared;
only what images change lives here:

* ``build_prompt``: template -> chat messages with image parts -> ``qwen_vl_utils`` (decode,
  RGB, resize to the processor's pixel budget) -> processor. The prompt ids include the
  expanded ``<|image_pad|>`` tokens and ``PromptInput.multimodal`` holds that one sample's
  ``pixel_values`` [patches, D], ``image_grid_thw`` [n_images, 3] and the resized RGB
  ``images`` (what vLLM takes). A bad image or an
  over-long prompt raises :class:`BadImageError` / :class:`BadRecordError` (``ValueError``s
  naming the record), which the loop turns into an error or a counted skip
  (``data.on_bad_record``). A prompt is never truncated: cutting through image tokens is
  what produces "Image features and image tokens do not match" deep inside the model.
* ``collate``: :func:`mm_gmpo.vl.collate.collate_vl_train`; ``TrainBatch.position_ids`` holds
  the 3-D mRoPE positions [3, B, P+R] computed by the model's own ``get_rope_index``, so the
  training forward scores responses at the positions ``generate`` sampled them at.
* ``forward``: builds the input embeddings itself: token embeddings, with the vision
  tower's features written into the *prompt's* image slots (each distinct prompt's images
  encoded once, repeated for its ``n`` responses), then runs the model on those embeddings
  at the 3-D positions. That is exactly what ``generate`` computed at prefill (images into
  the prompt's slots) and while decoding (plain embeddings, text positions), including for
  a response that sampled an ``<|image_pad|>`` token (see :mod:`mm_gmpo.vl.collate`).
* vision placeholder tokens are banned from responses by default (``banned_token_ids``:
  ``generate`` suppresses them, the vLLM engine passes the allowed ids, and the forward gives
  them probability 0 too, so samplers and trainer score one distribution). The forward does
  not depend on the ban to be correct; the ban keeps decoded answers free of placeholders.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from functools import partial
from typing import Any

import torch
from torch import nn

from mm_gmpo.data.images import ImageError
from mm_gmpo.data.records import BadRecordError, Record
from mm_gmpo.data.templates import PromptTemplate, get_template
from mm_gmpo.rollout.base import PromptInput, Rollout
from mm_gmpo.train.collate import TrainBatch
from mm_gmpo.train.logprobs import DEFAULT_LOGIT_CHUNK, response_logp
from mm_gmpo.vl.collate import (
    IMAGE_TYPE,
    collate_for_generate,
    collate_vl_train,
    distinct_offsets,
    mm_token_types,
)
from mm_gmpo.vl.model import processor_pixel_limits
from mm_gmpo.vl.vllm_requests import QwenVLRequests

VISION_TOKENS = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>")


class BadImageError(BadRecordError):
    """A record whose image cannot be used; ``reason`` is a short tally key (``empty``, ...)."""

    def __init__(self, record_id: str, index: int, reason: str, detail: str) -> None:
        super().__init__(f"record {record_id!r}: image {index}: {detail}", f"image:{reason}")
        self.record_id, self.index, self.image_reason = record_id, index, reason


class VLPolicyPath:
    """Qwen2.5-VL on prompts with zero, one or several images each.

    ``bad_records`` counts refused records by reason (``image:empty``, ``prompt_too_long``,
    ``too_many_images``, ...), so a run that skips them can say how many and why.
    ``max_images_per_prompt`` (``data.max_images_per_prompt``) is also the vLLM engine's
    per-prompt image limit (:meth:`vllm_requests`). ``logit_chunk``: response positions per
    chunk of LM head + log-softmax in ``forward`` (:mod:`mm_gmpo.train.logprobs`); 0 computes
    the full [B, R, V] logits (the reference).
    """

    def __init__(
        self,
        processor: Any,
        model: nn.Module,
        template: str | PromptTemplate = "geometry",
        max_prompt_len: int = 4096,
        ban_vision_tokens: bool = True,
        cache_mb: float = 256.0,
        logit_chunk: int = DEFAULT_LOGIT_CHUNK,
        max_images_per_prompt: int = 4,
    ) -> None:
        if max_images_per_prompt < 1:
            raise ValueError(f"max_images_per_prompt must be >= 1, got {max_images_per_prompt}")
        self.processor = processor
        self.logit_chunk = logit_chunk
        self.tokenizer = processor.tokenizer
        self.template = get_template(template) if isinstance(template, str) else template
        self.max_prompt_len = max_prompt_len
        self.max_images_per_prompt = max_images_per_prompt
        config = model.config
        self.image_token_id = int(config.image_token_id)
        video = getattr(config, "video_token_id", None)
        self.video_token_id = int(video) if video is not None else None
        self.merge_size = int(config.vision_config.spatial_merge_size)
        self.patch_size = int(config.vision_config.patch_size)
        # Bound method of the model itself: only reads the config, so it is safe to call on
        # CPU tensors during collation whatever device or wrapper the weights live in.
        inner = getattr(model, "model", model)
        self.rope_index = inner.get_rope_index
        self.min_pixels, self.max_pixels = processor_pixel_limits(processor)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.tokenizer.eos_token_id
        self.bad_records: Counter[str] = Counter()
        # Built prompts by record object, least recently used first; bounded by pixel bytes.
        self.cache_bytes = int(cache_mb * 2**20)
        self._cache: OrderedDict[int, tuple[Record, PromptInput, int]] = OrderedDict()
        self._cached_bytes = 0
        # Responses never need a vision placeholder; banning them keeps rollouts clean and the
        # engines and the trainer on one distribution (see ``forward``). vLLM reads this list.
        self.banned_token_ids: list[int] = (
            _vision_token_ids(self.tokenizer, config) if ban_vision_tokens else []
        )
        if self.banned_token_ids:
            self.ban_in_generate(model)

    def ban_in_generate(self, model: nn.Module) -> None:
        """Make ``model.generate`` never sample a banned token (``generation_config.suppress_tokens``).

        Every caller of ``generate`` (the rollout engine, evaluation) gets it, and it is saved
        with checkpoints.
        """
        config = model.generation_config
        current = list(getattr(config, "suppress_tokens", None) or [])
        config.suppress_tokens = sorted(set(current) | set(self.banned_token_ids))

    # ------------------------------------------------------------ prompts
    def build_prompt(self, record: Record) -> PromptInput:
        """Template, load and resize the images, run the processor; refuse, never truncate.

        Results are cached per record object (LRU, ``cache_mb`` of pixel data): the loop and
        the warm-start rebuild the same records every step, and decoding + processing images
        costs more than the tiny model's whole step. Keyed by identity, not ``record.id``,
        because ids of different datasets may collide; the entry holds the record so its id
        cannot be reused. A refused record is not cached (it is refused again, and counted).
        """
        hit = self._cache.get(id(record))
        if hit is not None and hit[0] is record:
            self._cache.move_to_end(id(record))
            return hit[1]
        try:
            prompt = self._build_prompt(record)
        except BadRecordError as exc:
            self.bad_records[exc.reason] += 1
            raise
        size = prompt.multimodal["pixel_values"].nbytes if prompt.multimodal else 0
        if size <= self.cache_bytes:
            self._cache[id(record)] = (record, prompt, size)
            self._cached_bytes += size
            while self._cached_bytes > self.cache_bytes:
                _, (_, _, freed) = self._cache.popitem(last=False)
                self._cached_bytes -= freed
        return prompt

    def _build_prompt(self, record: Record) -> PromptInput:
        if not str(record.problem).strip():
            raise BadRecordError(f"record {record.id!r}: empty problem text", "empty_problem")
        if len(record.images) > self.max_images_per_prompt:
            raise BadRecordError(
                f"record {record.id!r}: {len(record.images)} images, over "
                f"data.max_images_per_prompt={self.max_images_per_prompt} (the engines' per-prompt limit)",
                "too_many_images",
            )
        messages = self._messages(record)
        images = self._load_images(record, messages)
        text = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        try:
            out = self.processor(text=[text], images=images or None, return_tensors="pt")
        except ValueError as exc:  # e.g. a literal <|image_pad|> in the problem text
            raise BadRecordError(
                f"record {record.id!r}: processor refused the prompt: {exc}", "image_token_mismatch"
            ) from exc
        ids: list[int] = out["input_ids"][0].tolist()
        n_image_tokens = sum(1 for t in ids if t == self.image_token_id)
        multimodal = None
        expected = 0
        if images:
            grid = out["image_grid_thw"]  # [n_images, 3]
            expected = int(grid.prod(dim=1).sum()) // self.merge_size**2
            multimodal = {
                "pixel_values": out["pixel_values"],  # [patches, D]
                "image_grid_thw": grid.long(),  # [n_images, 3]
                "images": images,  # the resized RGB pictures, for engines that run their own processor (vLLM)
            }
        if n_image_tokens != expected:
            # e.g. a literal "<|image_pad|>" in the problem text: the model would fail with
            # "Image features and image tokens do not match" in the middle of a step.
            raise BadRecordError(
                f"record {record.id!r}: prompt holds {n_image_tokens} image tokens but its "
                f"{len(images)} image(s) need {expected}",
                "image_token_mismatch",
            )
        if len(ids) > self.max_prompt_len:
            raise BadRecordError(
                f"record {record.id!r}: prompt is {len(ids)} tokens ({n_image_tokens} of them image "
                f"tokens), over data.max_prompt_len={self.max_prompt_len}; it is refused rather than "
                f"cut through its image tokens (raise max_prompt_len or lower max_pixels)",
                "prompt_too_long",
            )
        return PromptInput(input_ids=ids, multimodal=multimodal)

    def _messages(self, record: Record) -> list[dict[str, Any]]:
        """Chat messages; bytes / paths are decoded (and validated) by the template."""
        try:
            prompt = self.template.build_record(record)
        except ImageError as exc:
            index = _failed_index(record, exc)
            raise BadImageError(record.id, index, exc.reason, str(exc)) from exc
        except ValueError as exc:  # placeholder count mismatch, text-only template with images
            raise BadRecordError(f"record {record.id!r}: {exc}", "template") from exc
        if isinstance(prompt, str):
            return [{"role": "user", "content": prompt}]
        return prompt

    def _load_images(self, record: Record, messages: list[dict[str, Any]]) -> list[Any]:
        """qwen-vl-utils turns every image part into an RGB picture sized to the pixel budget.

        The budget is the processor's own, so its resize afterwards is the identity and the
        token count is known here.
        """
        from qwen_vl_utils import process_vision_info

        parts = [
            part
            for message in messages
            if isinstance(message.get("content"), list)
            for part in message["content"]
            if part.get("type") == "image" or "image" in part
        ]
        if not parts:
            return []
        for part in parts:
            part["min_pixels"] = self.min_pixels
            part["max_pixels"] = self.max_pixels
        try:
            images, _ = process_vision_info(messages, image_patch_size=self.patch_size)
        except (ValueError, OSError, AssertionError) as exc:
            raise BadImageError(record.id, -1, "unusable", f"{type(exc).__name__}: {exc}") from exc
        return list(images or [])

    def vllm_requests(self) -> QwenVLRequests:
        """This path's vLLM request builder (placeholders, pixel budget, image limit, bans)."""
        return QwenVLRequests.from_path(self)

    # ------------------------------------------------------------ batches
    def collate_for_generate(self, prompts: list[PromptInput], pad_id: int) -> dict[str, torch.Tensor]:
        """``HFGenerateEngine(collate=...)``: left-padded ids, token types and images."""
        return collate_for_generate(prompts, pad_id, self.image_token_id, self.video_token_id)

    def generate_collate(self) -> Any:
        """A plain function of (prompts, pad_id), for engines that want one."""
        return partial(
            collate_for_generate, image_token_id=self.image_token_id, video_token_id=self.video_token_id
        )

    def collate(self, rollout: Rollout, rows: list[int]) -> TrainBatch:
        return collate_vl_train(
            rollout,
            rows,
            self.pad_id,
            self.image_token_id,
            self.rope_index,
            merge_size=self.merge_size,
            video_token_id=self.video_token_id,
        )

    def forward(
        self, model: nn.Module, batch: TrainBatch, temperature: float, with_entropy: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Log-probs [B, R] (and entropy [B, R]) of the response tokens, images included."""
        inputs = {
            "inputs_embeds": self.input_embeddings(model, batch),  # [B, P+R, H]
            "attention_mask": batch.attention_mask,  # [B, P+R]
            "position_ids": batch.position_ids,  # [3, B, P+R] mRoPE
        }
        # The samplers give banned tokens probability 0 and renormalise; so does the trainer.
        return response_logp(
            model,
            inputs,
            batch.response_ids,
            temperature,
            chunk=self.logit_chunk,
            mask=batch.response_mask,  # [B, R]
            with_entropy=with_entropy,
            banned_ids=self.banned_token_ids,
        )

    def input_embeddings(self, model: nn.Module, batch: TrainBatch) -> torch.Tensor:
        """Token embeddings with image features in the prompt's image slots [B, P+R, H].

        ``model`` may be a wrapper with the HF model at ``.module`` (DeepSpeed): the embedding
        table and the vision tower are called as submodules, which ZeRO-3 gathers as usual.
        """
        hf = getattr(model, "module", model)
        embeds = hf.get_input_embeddings()(batch.input_ids)  # [B, P+R, H]
        if "pixel_values" not in batch.extra:
            return embeds
        extra = batch.extra
        per_image = self.image_features(
            hf, extra["pixel_values"], extra["image_grid_thw"]
        )  # [tokens_i, H] each
        offsets = distinct_offsets(extra)  # (first image, n images, ...) per distinct sample
        rows = [
            per_image[i]
            for s in extra["image_source"].tolist()
            if s >= 0
            for i in range(offsets[s][0], offsets[s][0] + offsets[s][1])
        ]
        features = torch.cat(rows).to(embeds.dtype)  # [row image tokens, H], in reading order
        slots = (
            mm_token_types(batch.input_ids, self.image_token_id, self.video_token_id, batch.prompt_width)
            == IMAGE_TYPE
        )  # [B, P+R]
        if int(slots.sum()) != features.shape[0]:
            raise ValueError(f"{int(slots.sum())} image slots but {features.shape[0]} image features")
        return embeds.masked_scatter(slots.unsqueeze(-1), features)  # [B, P+R, H]

    def image_features(
        self, hf: nn.Module, pixel_values: torch.Tensor, grid_thw: torch.Tensor
    ) -> list[torch.Tensor]:
        """Vision tower + merger output, one [tokens_i, H] tensor per image."""
        out = hf.get_image_features(pixel_values, grid_thw)
        feats = getattr(out, "pooler_output", out)  # transformers 5.x: a model output
        if isinstance(feats, torch.Tensor):  # older versions: one flat tensor
            sizes = (grid_thw.prod(dim=1) // self.merge_size**2).tolist()
            return list(torch.split(feats, sizes))
        return list(feats)

    def decode(self, rollout: Rollout) -> list[str]:
        return self.tokenizer.batch_decode(rollout.response_ids, skip_special_tokens=True)


def _vision_token_ids(tokenizer: Any, config: Any) -> list[int]:
    """Ids of the vision placeholder tokens (from the config and the tokenizer)."""
    ids = {int(config.image_token_id)}
    for name in ("video_token_id", "vision_start_token_id", "vision_end_token_id"):
        value = getattr(config, name, None)
        if value is not None:
            ids.add(int(value))
    for token in VISION_TOKENS:
        tid = tokenizer.convert_tokens_to_ids(token)
        if isinstance(tid, int) and tid >= 0 and tid != tokenizer.unk_token_id:
            ids.add(tid)
    return sorted(ids)


def _failed_index(record: Record, exc: ImageError) -> int:
    """Which of the record's images failed (the template decodes them in order)."""
    for i, ref in enumerate(record.images):
        if isinstance(ref, bytes | bytearray):
            if exc.ref == f"<{len(ref)} bytes in memory>":
                return i
        elif exc.ref == str(ref):
            return i
    return -1
