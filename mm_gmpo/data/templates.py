"""Prompt templates, by name, as the GMPO paper's scripts apply them.

The text recipes follow the Dr.GRPO / understand-r1-zero code the paper builds on (``qwen_math``,
``r1``, ``none``); the R1-Distill recipe prompts the model through its own chat template
(``r1_distill``); the VL recipe follows EasyR1's geometry prompt (``geometry``).

Two kinds of template exist because the two paths consume prompts differently:

* **text** templates (``r1``, ``none``) produce the final prompt string directly; the tokenizer's
  chat template is never involved (R1-Zero prompts a base model with plain text);
* **chat** templates (``qwen_math``, ``r1_distill``, ``geometry``) produce chat messages. The
  text path turns them into a string with the tokenizer's chat template (:func:`render_prompt`;
  ``data.chat_template`` can replace the checkpoint's); the VL path hands the messages, image
  parts included, to ``qwen_vl_utils.process_vision_info`` and the processor.

So ``template.build(problem, images)`` returns ``str`` or ``list[Message]``, and
:func:`render_prompt` gives the string either way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mm_gmpo.data.records import ImageRef, Record

Message = dict[str, Any]
Prompt = str | list[Message]

QWEN_MATH_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."

R1_TEMPLATE = (
    "A conversation between User and Assistant. The User asks a question, and the Assistant solves it. "
    "The Assistant first thinks about the reasoning process in the mind and then provides the User with "
    "the answer. The reasoning process is enclosed within <think> </think> and answer is enclosed within "
    "<answer> </answer> tags, respectively, i.e., <think> reasoning process here </think> "
    "<answer> answer here </answer>.\nUser: {question}\nAssistant: <think>"
)

# DeepSeek-R1's usage notes (model card of deepseek-ai/DeepSeek-R1 and its Distill models): no
# system prompt, every instruction in the user turn, and for math a step-by-step / \boxed{}
# directive; the checkpoint's own chat template then opens the assistant turn with <think>.
R1_DISTILL_INSTRUCTION = QWEN_MATH_SYSTEM

GEOMETRY_SUFFIX = (
    "You FIRST think about the reasoning process as an internal monologue and then provide the final "
    "answer. The reasoning process MUST BE enclosed within <think> </think> tags. The final answer MUST "
    "BE put in \\boxed{}."
)

IMAGE_PLACEHOLDER = "<image>"


@dataclass(frozen=True)
class PromptTemplate:
    """A named prompt recipe.

    ``kind`` tells the caller what :meth:`build` returns: ``"text"`` → a finished prompt string,
    ``"chat"`` → chat messages that still need a chat template (or a processor).
    ``accepts_images`` is False for the math templates: silently dropping a record's images
    would train a VL model blind, so passing images to them is an error.
    """

    name: str
    kind: Literal["text", "chat"]
    accepts_images: bool
    _build: Callable[[str, Sequence[Any]], Prompt]

    def build(self, problem: str, images: Sequence[ImageRef | Any] = ()) -> Prompt:
        """Prompt for one problem; ``images`` are bytes, paths or PIL images."""
        if images and not self.accepts_images:
            raise ValueError(
                f"template {self.name!r} is text-only but got {len(images)} image(s); "
                f"use an image template ({', '.join(n for n, t in TEMPLATES.items() if t.accepts_images)})"
            )
        return self._build(problem, images)

    def build_record(self, record: Record) -> Prompt:
        return self.build(record.problem, record.images)


def _qwen_math(problem: str, images: Sequence[Any]) -> list[Message]:
    return [{"role": "system", "content": QWEN_MATH_SYSTEM}, {"role": "user", "content": problem}]


def _r1_distill(problem: str, images: Sequence[Any]) -> list[Message]:
    """One user turn, no system turn: the distilled reasoning models were tuned that way, and the
    tokenizer's own template (not this module) adds the assistant turn and its ``<think>``."""
    return [{"role": "user", "content": f"{problem}\n{R1_DISTILL_INSTRUCTION}"}]


def _r1(problem: str, images: Sequence[Any]) -> str:
    return R1_TEMPLATE.format(question=problem)


def _none(problem: str, images: Sequence[Any]) -> str:
    return problem


def image_part(image: ImageRef | Any) -> dict[str, Any]:
    """A chat content part for one image, in the form ``qwen_vl_utils.fetch_image`` reads.

    Bytes and paths are decoded with :func:`mm_gmpo.data.images.load_image_rgb`, the same
    function data prep validated the images with (qwen-vl-utils cannot read raw bytes, and would
    open paths without those checks); PIL images pass through unchanged.
    """
    if isinstance(image, bytes | bytearray | str | Path):
        from mm_gmpo.data.images import load_image_rgb

        image = load_image_rgb(image)
    return {"type": "image", "image": image}


def _geometry(problem: str, images: Sequence[Any]) -> list[Message]:
    """EasyR1-style user turn: the images, then the question and the format instruction.

    ``<image>`` placeholders in the question mark where each image goes; without placeholders
    the images come first (Qwen-VL's usual order).
    """
    text = f"{problem.strip()} {GEOMETRY_SUFFIX}"
    n_slots = text.count(IMAGE_PLACEHOLDER)
    if n_slots == 0:
        parts = [image_part(im) for im in images] + [{"type": "text", "text": text}]
        return [{"role": "user", "content": parts}]
    if n_slots != len(images):
        raise ValueError(
            f"problem has {n_slots} {IMAGE_PLACEHOLDER} placeholder(s) but {len(images)} image(s)"
        )
    parts: list[dict[str, Any]] = []
    for i, chunk in enumerate(text.split(IMAGE_PLACEHOLDER)):
        if chunk.strip():
            parts.append({"type": "text", "text": chunk})
        if i < len(images):
            parts.append(image_part(images[i]))
    return [{"role": "user", "content": parts}]


def _vl_short(problem: str, images: Sequence[Any]) -> list[Message]:
    """The images, then the bare question: for the tiny CPU demo model (no format instruction).

    Why: the geometry instruction puts ~80 text tokens between the picture and the answer,
    which a two-layer random model did not learn to look across in a CPU-sized run.
    """
    parts = [image_part(im) for im in images] + [{"type": "text", "text": problem}]
    return [{"role": "user", "content": parts}]


TEMPLATES: dict[str, PromptTemplate] = {
    t.name: t
    for t in (
        PromptTemplate("qwen_math", "chat", False, _qwen_math),
        PromptTemplate("r1_distill", "chat", False, _r1_distill),
        PromptTemplate("r1", "text", False, _r1),
        PromptTemplate("none", "text", False, _none),
        PromptTemplate("geometry", "chat", True, _geometry),
        PromptTemplate("vl_short", "chat", True, _vl_short),
    )
}


def get_template(name: str) -> PromptTemplate:
    """Look a template up by name; the error lists the valid names."""
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ValueError(
            f"unknown prompt template {name!r}; valid templates: {', '.join(sorted(TEMPLATES))}"
        ) from None


def render_prompt(prompt: Prompt, tokenizer: Any) -> str:
    """The prompt as the string the model sees.

    ``tokenizer`` is a tokenizer or a processor (anything with ``apply_chat_template``); it is
    only used for chat prompts, with the generation prompt added.
    """
    if isinstance(prompt, str):
        return prompt
    return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)


def apply_template(template: str | PromptTemplate, record: Record, tokenizer: Any = None) -> str:
    """Record → prompt string in one call (text path; the VL path keeps the messages)."""
    tmpl = get_template(template) if isinstance(template, str) else template
    prompt = tmpl.build_record(record)
    if not isinstance(prompt, str) and tokenizer is None:
        raise ValueError(f"template {tmpl.name!r} builds chat messages: pass a tokenizer or processor")
    return render_prompt(prompt, tokenizer)
