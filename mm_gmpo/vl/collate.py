"""Image-aware collation for Qwen2.5-VL: rollout (generate) inputs and training micro-batches.

Why this is its own module: a batch of VL prompts is more than padded ids. Each prompt carries
its own ``pixel_values`` (one row per 14x14 patch, all its images stacked) and one
``image_grid_thw`` row per image. The model consumes them as *flat* tensors concatenated in
sample order and matches them to the ``<|image_pad|>`` tokens of ``input_ids`` in reading
order. So a batch is only valid when the images are concatenated in exactly the row order of
``input_ids``; cutting a micro-batch out of a rollout batch therefore re-collates from the
per-sample tensors kept in ``Rollout.multimodal`` instead of slicing flat tensors.

The second thing that differs from text is position ids. Qwen2.5-VL uses 3-D mRoPE positions
(temporal, height, width) that ``get_rope_index`` derives from the ids, the token types and
the image grids. ``generate`` computes them when it gets ``mm_token_type_ids``; a training
forward given 1-D (or no) positions silently falls back to plain RoPE and scores the
responses under a different model. :func:`collate_vl_train` therefore computes the 3-D
positions with the model's own ``get_rope_index`` for the full prompt+response sequence and
stores them in ``TrainBatch.position_ids`` ([3, B, P+R]).
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

# (input_ids [B, L], mm_token_type_ids [B, L], image_grid_thw [n, 3] | None, attention_mask [B, L])
#   -> (position_ids [3, B, L], rope_deltas [B, 1]); the model's own ``get_rope_index``.
RopeIndexFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]

# Keys of ``TrainBatch.extra`` that go to the model's forward; the rest is bookkeeping.
MODEL_KEYS = ("pixel_values", "image_grid_thw")


def mm_token_types(
    input_ids: torch.Tensor, image_token_id: int, video_token_id: int | None = None
) -> torch.Tensor:
    """Token types (0 text, 1 image, 2 video) from the ids, as the processor would write them.

    Rebuilt from the ids rather than carried along, so that a response (always text) and the
    padding get type 0 without any bookkeeping. ``input_ids`` [B, L] -> [B, L] long.
    """
    types = torch.zeros_like(input_ids)  # [B, L]
    types[input_ids == image_token_id] = IMAGE_TYPE
    if video_token_id is not None:
        types[input_ids == video_token_id] = VIDEO_TYPE
    return types


def image_count(multimodal: dict[str, Any] | None) -> int:
    """How many images one sample carries (rows of its ``image_grid_thw``)."""
    if not multimodal or multimodal.get("image_grid_thw") is None:
        return 0
    return int(multimodal["image_grid_thw"].shape[0])


def concat_images(samples: Sequence[dict[str, Any] | None]) -> dict[str, torch.Tensor]:
    """Flat ``pixel_values`` / ``image_grid_thw`` of several samples, in sample order.

    Returns an empty dict when no sample has an image (a text-only batch must not pass empty
    image tensors: the vision tower would run on nothing). Also returns ``image_counts`` [B]
    (images per sample) so the batch can be split back per sample.
    """
    pixels, grids, counts = [], [], []
    for mm in samples:
        n = image_count(mm)
        counts.append(n)
        if n:
            pixels.append(mm["pixel_values"])  # [patches_i, C*T*14*14]
            grids.append(mm["image_grid_thw"])  # [n_i, 3]
    if not pixels:
        return {}
    return {
        "pixel_values": torch.cat(pixels, dim=0),  # [sum patches, C*T*14*14]
        "image_grid_thw": torch.cat(grids, dim=0).long(),  # [sum n_i, 3]
        "image_counts": torch.tensor(counts, dtype=torch.long),  # [B]
    }


def split_images(extra: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor] | None]:
    """Inverse of :func:`concat_images`: the per-sample image tensors of a collated batch.

    Patches per image are ``t*h*w`` of its grid row, so the flat ``pixel_values`` can be cut
    back without any other record; tests use it to check that a micro-batch kept each
    sample's own images.
    """
    if "image_counts" not in extra:
        return []
    counts = extra["image_counts"].tolist()
    grids = extra["image_grid_thw"]  # [n_images, 3]
    patches = grids.prod(dim=1).tolist()  # patches per image
    out: list[dict[str, torch.Tensor] | None] = []
    img, row = 0, 0
    for n in counts:
        if n == 0:
            out.append(None)
            continue
        n_patch = int(sum(patches[img : img + n]))
        out.append(
            {
                "pixel_values": extra["pixel_values"][row : row + n_patch],  # [patches_i, D]
                "image_grid_thw": grids[img : img + n],  # [n_i, 3]
            }
        )
        img, row = img + n, row + n_patch
    return out


def collate_for_generate(
    prompts: list[PromptInput], pad_id: int, image_token_id: int, video_token_id: int | None = None
) -> dict[str, torch.Tensor]:
    """Left-padded ``generate()`` inputs with the images of every prompt, in prompt order.

    ``mm_token_type_ids`` is what makes ``generate`` compute 3-D mRoPE positions; without it
    transformers 5.x silently uses 1-D positions. ``num_return_sequences`` copies are expanded
    by ``generate`` itself (it encodes the images once and repeats each prompt's features).
    """
    batch = left_pad_prompts(prompts, pad_id)  # input_ids, attention_mask: [B, P]
    batch["mm_token_type_ids"] = mm_token_types(batch["input_ids"], image_token_id, video_token_id)  # [B, P]
    images = concat_images([p.multimodal for p in prompts])
    images.pop("image_counts", None)
    batch.update(images)
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
    in any order, gets exactly its own images. ``TrainBatch.position_ids`` is [3, B, P+R]:
    the positions ``generate`` used for the prompt, continued one per response token.
    """
    batch = collate_prompt_response(
        [rollout.prompt_ids[r] for r in rows], [rollout.response_ids[r] for r in rows], pad_id
    )
    samples = [rollout.multimodal[r] if rollout.multimodal else None for r in rows]
    images = concat_images(samples)
    types = mm_token_types(batch.input_ids, image_token_id, video_token_id)  # [B, P+R]
    n_tokens = int((types == IMAGE_TYPE).sum())
    if images:
        n_patches = int(images["image_grid_thw"].prod(dim=1).sum())  # patches (before 2x2 merge)
        if n_tokens * merge_size**2 != n_patches:
            raise ValueError(
                f"image tokens ({n_tokens}) do not match the images of rows {rows} "
                f"({n_patches} patches); a prompt was truncated or its images were mixed up"
            )
        positions, _ = rope_index(
            batch.input_ids,
            mm_token_type_ids=types,
            image_grid_thw=images["image_grid_thw"],
            attention_mask=batch.attention_mask,
        )  # [3, B, P+R]
    else:
        if n_tokens:
            raise ValueError(f"rows {rows} hold {n_tokens} image tokens but no images")
        positions = batch.position_ids.unsqueeze(0).expand(3, -1, -1).clone()  # [3, B, P+R]
    batch.position_ids = positions
    batch.extra = images
    return batch
