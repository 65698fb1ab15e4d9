"""Qwen2.5-VL prompts as vLLM requests: the VL path's side of the vLLM engine.

The trainer and vLLM must see the same image tokens at the same places. The VL path's prompt
ids hold every image's *expanded* ``<|image_pad|>`` run (what the trainer's forward needs),
while vLLM expands one placeholder per image itself, from ``multi_modal_data`` run through
its own copy of the HF processor. So a request carries the ids with each run collapsed to one
placeholder, the resized pictures in prompt order, and the trainer's pixel budget as
processor kwargs (its resize is then the identity and the token counts agree); the engine is
told the most images a prompt may carry (``limit_mm_per_prompt``).

:class:`QwenVLRequests` fulfils :class:`mm_gmpo.rollout.vllm.VLLMRequestBuilder`, as the
text path's :class:`mm_gmpo.rollout.vllm.TokenIdRequests` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from mm_gmpo.rollout.base import PromptInput


def collapse_image_tokens(
    ids: Sequence[int], image_token_id: int, tokens_per_image: Sequence[int]
) -> list[int]:
    """Turn each expanded run of ``<|image_pad|>`` back into one placeholder token.

    The run lengths are checked against the images' token counts, so a prompt and its images
    can never silently disagree (vLLM would otherwise place the features elsewhere).
    """
    out: list[int] = []
    runs: list[int] = []
    i = 0
    while i < len(ids):
        if ids[i] == image_token_id:
            j = i
            while j < len(ids) and ids[j] == image_token_id:
                j += 1
            runs.append(j - i)
            out.append(image_token_id)
            i = j
        else:
            out.append(ids[i])
            i += 1
    if list(runs) != list(tokens_per_image):
        raise ValueError(
            f"prompt holds image-token runs {runs} but its images need {list(tokens_per_image)} tokens each"
        )
    return out


def image_token_counts(image_grid_thw: torch.Tensor | None, merge_size: int) -> list[int]:
    """Tokens each image takes in the prompt: t·h·w patches merged ``merge_size``² to one."""
    if image_grid_thw is None:
        return []
    grid = torch.as_tensor(image_grid_thw).reshape(-1, 3)  # [n_images, 3]
    return [int(n) // merge_size**2 for n in grid.prod(dim=1).tolist()]


@dataclass(frozen=True)
class QwenVLRequests:
    """vLLM requests for Qwen2.5-VL prompts built by :class:`mm_gmpo.vl.path.VLPolicyPath`.

    ``min_pixels`` / ``max_pixels`` are the trainer's processor budget (sent as
    ``mm_processor_kwargs`` on every request and as the engine default);
    ``max_images_per_prompt`` becomes vLLM's ``limit_mm_per_prompt``; ``banned_token_ids``
    (the vision placeholders) are never sampled, as in the trainer's forward.
    """

    image_token_id: int
    merge_size: int
    min_pixels: int | None
    max_pixels: int | None
    max_images_per_prompt: int
    banned_token_ids: tuple[int, ...] = field(default_factory=tuple)

    @classmethod
    def from_path(cls, path: Any) -> QwenVLRequests:
        """The builder for a :class:`~mm_gmpo.vl.path.VLPolicyPath` (its tokens, budget, limit)."""
        return cls(
            image_token_id=path.image_token_id,
            merge_size=path.merge_size,
            min_pixels=path.min_pixels,
            max_pixels=path.max_pixels,
            max_images_per_prompt=path.max_images_per_prompt,
            banned_token_ids=tuple(path.banned_token_ids),
        )

    def processor_kwargs(self) -> dict[str, int]:
        budget = {"min_pixels": self.min_pixels, "max_pixels": self.max_pixels}
        return {k: v for k, v in budget.items() if v is not None}

    def vllm_engine_kwargs(self) -> dict[str, Any]:
        """``vllm.LLM`` arguments this path needs: the image limit and the pixel budget."""
        kwargs: dict[str, Any] = {"limit_mm_per_prompt": {"image": self.max_images_per_prompt}}
        if self.processor_kwargs():
            kwargs["mm_processor_kwargs"] = self.processor_kwargs()
        return kwargs

    def build_vllm_requests(self, prompts: Sequence[PromptInput]) -> list[dict[str, Any]]:
        return [self.build_request(p) for p in prompts]

    def build_request(self, prompt: PromptInput) -> dict[str, Any]:
        """One ``TokensPrompt`` dict; a prompt without images is its token ids.

        A prompt with images must carry the PIL ``images`` in ``multimodal`` (vLLM runs its
        own processor; ``pixel_values`` cannot be sent) next to the trainer's
        ``image_grid_thw``.
        """
        request: dict[str, Any] = {"prompt_token_ids": list(prompt.input_ids)}
        mm = prompt.multimodal or {}
        grid = mm.get("image_grid_thw")
        if grid is None or len(grid) == 0:
            return request
        images = mm.get("images")
        if not images:
            raise ValueError(
                "a VL prompt for vLLM needs its PIL images in PromptInput.multimodal['images'] "
                "(vLLM runs its own processor; pixel_values alone cannot be sent)"
            )
        counts = image_token_counts(grid, self.merge_size)
        if len(images) != len(counts):
            raise ValueError(f"{len(images)} images but image_grid_thw describes {len(counts)}")
        request["prompt_token_ids"] = collapse_image_tokens(prompt.input_ids, self.image_token_id, counts)
        request["multi_modal_data"] = {"image": list(images)}
        if self.processor_kwargs():
            request["mm_processor_kwargs"] = self.processor_kwargs()
        return request
