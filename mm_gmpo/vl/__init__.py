"""The vision-language path: Qwen2.5-VL model + processor, image-aware collation, mRoPE forward.

``mm_gmpo.vl.build`` is this modality's entry in :mod:`mm_gmpo.policy_paths` (training and
evaluation build through it); ``VLPolicyPath`` is the policy path the shared loop drives (same
protocol as the text path).
"""

from mm_gmpo.vl.build import pixel_budget
from mm_gmpo.vl.collate import collate_for_generate, collate_vl_train, split_images
from mm_gmpo.vl.model import (
    EASYR1_MAX_PIXELS,
    EASYR1_MIN_PIXELS,
    freeze_vision_tower,
    load_vl_model,
    load_vl_processor,
    processor_pixel_limits,
    vision_tower,
)
from mm_gmpo.vl.path import BadImageError, VLPolicyPath

__all__ = [
    "EASYR1_MAX_PIXELS",
    "EASYR1_MIN_PIXELS",
    "BadImageError",
    "VLPolicyPath",
    "collate_for_generate",
    "collate_vl_train",
    "freeze_vision_tower",
    "load_vl_model",
    "load_vl_processor",
    "pixel_budget",
    "processor_pixel_limits",
    "split_images",
    "vision_tower",
]
