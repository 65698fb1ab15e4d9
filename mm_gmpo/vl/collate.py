"""Image-aware collation for Qwen2.5-VL: rollout (generate) inputs and training micro-batches.

Why this is its own module: a batch of VL prompts is more than padded ids. Each prompt carries
its own ``pixel_values`` (one row per 14x14 patch, all its images stacked) and one
``image_grid_thw`` row per image. The model matches image features to the ``<|image_pad|>``
tokens of ``input_ids`` in reading order, so flat image tensors are only valid in exactly the
row order of ``input_ids``. A micro-batch cut out of a rollout batch is therefore re-collated
from the per-sample tensors kept in ``Rollout.multimodal`` (never by slicing flat tensors),
and carries per-row image counts so it can be split back (:func:`split_images`).

Layout of ``TrainBatch.extra`` for the training forward (see ``VLPolicyPath.forward``):

* ``pixel_values`` [patches, D] / ``image_grid_thw`` [n_images, 3]: the images of each
  *distinct* sample once. The ``n`` responses of a prompt share one ``multimodal`` dict, so
  the vision tower runs once per prompt instead of ``n`` times (it dominated the step time);
  the features are then repeated per row, and gradients from every row add up in the tower;
* ``image_source`` [B]: which distinct sample row ``b`` shows (-1: no image);
* ``image_counts`` [B]: images per row.

Position ids: Qwen2.5-VL uses 3-D mRoPE positions (temporal, height, width) that
``get_rope_index`` derives from the ids, token types and image grids. ``generate`` computes
them when it gets ``mm_token_type_ids``; a forward given 1-D (or no) positions silently falls
back to plain RoPE and scores responses under a different model. :func:`collate_vl_train`
computes them with the model's own ``get_rope_index`` over prompt+response and stores them in
``TrainBatch.position_ids`` [3, B, P+R].

Only *prompt* placeholder tokens are image slots. A response may contain a sampled
``<|image_pad|>`` (vLLM and ``generate`` do sample it); during decoding it was an ordinary
embedding at a text position, so it is typed as text here too. Treating it as an image slot
is the "Image features and image tokens do not match: tokens: N+1, features: N" crash that RL
users of Qwen-VL report.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from mm_gmpo.rollout.base import PromptInput, Rollout
from mm_gmpo.rollout.hf import left_pad_prompts
from mm_gmpo.train.collate import TrainBatch, collate_prompt_response

# Token types as the Qwen2.5-VL processor writes them in ``mm_token_type_ids``.
TEXT_TYPE, IMAGE_TYPE, VIDEO_TYPE = 0, 1, 2

# (input_ids [B, L], mm_token_type_ids=[B, L], image_grid_thw=[n, 3], attention_mask=[B, L])
#   -> (position_ids [3, B, L], rope_deltas [B, 1]); the model's own ``get_rope_index``.
RopeIndexFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def mm_token_types(
    input_ids: torch.Tensor,
    image_token_id: int,
    video_token_id: int | None = None,
    prompt_width: int | None = None,
) -> torch.Tensor:
    """Token types (0 text, 1 image, 2 video) from the ids, as the processor writes them.

    Rebuilt from the ids rather than carried along; columns from ``prompt_width`` on (the
    response) are always text. ``input_ids`` [B, L] -> [B, L] long.
    """
    types = torch.zeros_like(input_ids)  # [B, L]
    types[input_ids == image_token_id] = IMAGE_TYPE
    if video_token_id is not None:
        types[input_ids == video_token_id] = VIDEO_TYPE
    if prompt_width is not None:
        types[:, prompt_width:] = TEXT_TYPE
    return types


def image_count(multimodal: dict[str, Any] | None) -> int:
    """How many images one sample carries (rows of its ``image_grid_thw``)."""
    if not multimodal or multimodal.get("image_grid_thw") is None:
        return 0
    return int(multimodal["image_grid_thw"].shape[0])


def concat_images(samples: Sequence[dict[str, Any] | None]) -> dict[str, torch.Tensor]:
    """Flat ``pixel_values`` / ``image_grid_thw`` of every sample, in sample order.

    This is the layout ``generate`` takes. Empty when no sample has an image (a text-only
    batch must not pass empty image tensors).
    """
    with_images = [mm for mm in samples if image_count(mm)]
    if not with_images:
        return {}
    return {
        "pixel_values": torch.cat([mm["pixel_values"] for mm in with_images]),  # [patches, D]
        "image_grid_thw": torch.cat([mm["image_grid_thw"] for mm in with_images]).long(),  # [n, 3]
    }


def dedup_images(samples: Sequence[dict[str, Any] | None]) -> dict[str, torch.Tensor]:
    """Images of the distinct samples (by identity) once, plus each row's source and count.

    Returns ``{}`` for a text-only batch; otherwise the keys described in the module doc.
    """
    index: dict[int, int] = {}
    distinct: list[dict[str, Any]] = []
    sources, counts = [], []
    for mm in samples:
        n = image_count(mm)
        counts.append(n)
        if not n:
            sources.append(-1)
            continue
        key = id(mm)
        if key not in index:
            index[key] = len(distinct)
            distinct.append(mm)
        sources.append(index[key])
    if not distinct:
        return {}
    out = concat_images(distinct)
    out["image_source"] = torch.tensor(sources, dtype=torch.long)  # [B]
    out["image_counts"] = torch.tensor(counts, dtype=torch.long)  # [B]
    return out


def distinct_offsets(extra: dict[str, torch.Tensor]) -> list[tuple[int, int, int, int]]:
    """(first image, n images, first patch, n patches) of each distinct sample in ``extra``."""
    sources, counts = extra["image_source"].tolist(), extra["image_counts"].tolist()
    n_distinct = max(sources) + 1
    per_distinct = [0] * n_distinct
    for s, c in zip(sources, counts):
        if s >= 0:
            per_distinct[s] = c
    patches = extra["image_grid_thw"].prod(dim=1).tolist()  # patches per distinct image
    out, img, row = [], 0, 0
    for n in per_distinct:
        n_patch = int(sum(patches[img : img + n]))
        out.append((img, n, row, n_patch))
        img, row = img + n, row + n_patch
    return out


def row_grids(extra: dict[str, torch.Tensor]) -> torch.Tensor:
    """``image_grid_thw`` with one row per image *as the batch rows show them* [n_row_images, 3]."""
    offsets = distinct_offsets(extra)
    grids = extra["image_grid_thw"]
    parts = [
        grids[offsets[s][0] : offsets[s][0] + offsets[s][1]] for s in extra["image_source"].tolist() if s >= 0
    ]
    return torch.cat(parts) if parts else grids[:0]


def split_images(extra: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor] | None]:
    """The images of each row of a collated batch: ``None`` or ``pixel_values`` / ``image_grid_thw``."""
    if "image_source" not in extra:
        return []
    offsets = distinct_offsets(extra)
    out: list[dict[str, torch.Tensor] | None] = []
    for s in extra["image_source"].tolist():
        if s < 0:
            out.append(None)
            continue
        img, n, row, n_patch = offsets[s]
        out.append(
            {
                "pixel_values": extra["pixel_values"][row : row + n_patch],  # [patches_i, D]
                "image_grid_thw": extra["image_grid_thw"][img : img + n],  # [n_i, 3]
            }
        )
    return out


def collate_for_generate(
    prompts: list[PromptInput], pad_id: int, image_token_id: int, video_token_id: int | None = None
) -> dict[str, torch.Tensor]:
    """Left-padded ``generate()`` inputs with the images of every prompt, in prompt order.

    ``mm_token_type_ids`` is what makes ``generate`` compute 3-D mRoPE positions; without it
    transformers 5.x silently uses 1-D positions. ``num_return_sequences`` copies are expanded
    by ``generate`` itself: it encodes each prompt's images once and repeats the features per
    copy (checked against repeating the prompts by hand in the tests).
    """
    batch = left_pad_prompts(prompts, pad_id)  # input_ids, attention_mask: [B, P]
    batch["mm_token_type_ids"] = mm_token_types(batch["input_ids"], image_token_id, video_token_id)  # [B, P]
    batch.update(concat_images([p.multimodal for p in prompts]))
    return batch


def collate_vl_train(
    rollout: Rollout,
    rows: list[int],
    pad_id: int,
    image_token_id: int,
    rope_index: RopeIndexFn,
    merge_size: int = 2,
    video_token_id: int | None = None,
) -> TrainBatch:
    """A training micro-batch of ``rows``: ids as the text path, plus images and 3-D positions.

    The images come from each row's own ``rollout.multimodal`` entry, so any subset of rows,
    in any order, gets exactly its own images; a mismatch between a row's image slots and its
    images is refused here, naming the rows, instead of failing inside the model.
    """
    batch = collate_prompt_response(
        [rollout.prompt_ids[r] for r in rows], [rollout.response_ids[r] for r in rows], pad_id
    )
    samples = [rollout.multimodal[r] if rollout.multimodal else None for r in rows]
    images = dedup_images(samples)
    types = mm_token_types(batch.input_ids, image_token_id, video_token_id, batch.prompt_width)  # [B, P+R]
    slots = (types == IMAGE_TYPE).sum(dim=1).tolist()  # image tokens per row
    for j, (r, mm) in enumerate(zip(rows, samples)):
        need = int(mm["image_grid_thw"].prod(dim=1).sum()) // merge_size**2 if image_count(mm) else 0
        if slots[j] != need:
            raise ValueError(
                f"row {r}: its prompt has {slots[j]} image tokens but its images need {need}; "
                f"a prompt was truncated or the images were mixed up"
            )
    if images:
        positions, _ = rope_index(
            batch.input_ids,
            mm_token_type_ids=types,
            image_grid_thw=row_grids(images),
            attention_mask=batch.attention_mask,
        )  # [3, B, P+R]
    else:
        positions = batch.position_ids.unsqueeze(0).expand(3, -1, -1).clone()  # [3, B, P+R]
    batch.position_ids = positions
    batch.extra = images
    return batch
