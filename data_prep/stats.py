"""Statistics of record files: counts, answer types, image sizes, prompt token lengths.

Prompt lengths are measured with a given tokenizer (a local path or anything
``AutoTokenizer.from_pretrained`` accepts offline) against the paper's limits: prompt 1024 /
response 3000 tokens for text, 2048 / 2048 for vision-language. For records with images the
count adds an estimate of the image tokens Qwen2.5-VL will insert: the image resized to
multiples of 28 px within ``[--vl-min-pixels, --vl-max-pixels]``, one token per 28x28 block,
plus the vision start/end markers. ``--chat`` wraps the problem as one user turn with the
tokenizer's chat template, closer to what the policy sees; without it the bare problem text is
counted, a lower bound.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from data_prep.common import DataFormatError, console, print_table, progress
from data_prep.images import BUCKET_NAMES, size_bucket
from mm_gmpo.data.images import ImageError, image_size
from mm_gmpo.data.record_io import read_records
from mm_gmpo.data.records import Record

TEXT_LIMITS = {"prompt": 1024, "response": 3000}
VL_LIMITS = {"prompt": 2048, "response": 2048}
VL_FACTOR = 28  # Qwen2.5-VL: 14 px patches, 2x2 merged into one token
VL_MIN_PIXELS = 4 * 28 * 28
VL_MAX_PIXELS = 1280 * 28 * 28

_NUMBER = re.compile(r"[-+]?\d+")
_DECIMAL = re.compile(r"[-+]?(\d+\.\d*|\.\d+)")


def answer_type(rec: Record) -> str:
    """A coarse label: list, letter, integer, decimal, latex or text."""
    if isinstance(rec.answer, list):
        return "list"
    text = rec.answer.strip()
    if rec.choices and len(text) == 1 and text.isalpha() and text.isupper():
        return "letter"
    if _NUMBER.fullmatch(text):
        return "integer"
    if _DECIMAL.fullmatch(text):
        return "decimal"
    if "\\" in text or "{" in text or "^" in text:
        return "latex"
    return "text"


def vl_image_tokens(
    width: int, height: int, min_pixels: int = VL_MIN_PIXELS, max_pixels: int = VL_MAX_PIXELS
) -> int:
    """Image tokens for one image: resize to multiples of 28 within the pixel budget, count blocks."""
    f = VL_FACTOR
    h, w = max(f, round(height / f) * f), max(f, round(width / f) * f)
    if h * w > max_pixels:
        scale = math.sqrt(height * width / max_pixels)
        h, w = max(f, math.floor(height / scale / f) * f), max(f, math.floor(width / scale / f) * f)
    elif h * w < min_pixels:
        scale = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * scale / f) * f, math.ceil(width * scale / f) * f
    return (h // f) * (w // f)


def _quantiles(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def q(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))]

    return {
        "min": ordered[0],
        "mean": statistics.fmean(ordered),
        "p50": q(0.5),
        "p95": q(0.95),
        "max": ordered[-1],
    }


def compute_stats(
    records: Sequence[Record],
    tokenizer: Any = None,
    *,
    chat: bool = False,
    prompt_limit: int | None = None,
    vl_min_pixels: int = VL_MIN_PIXELS,
    vl_max_pixels: int = VL_MAX_PIXELS,
) -> dict[str, Any]:
    """Everything the ``stats`` command prints, as a plain dict (JSON-serialisable)."""
    out: dict[str, Any] = {
        "records": len(records),
        "sources": dict(Counter(r.source for r in records)),
        "splits": dict(Counter(r.split for r in records)),
        "with_choices": sum(r.choices is not None for r in records),
        "with_images": sum(bool(r.images) for r in records),
        "answer_types": dict(Counter(answer_type(r) for r in records)),
    }
    widths, heights, buckets, bad = [], [], Counter(), Counter()
    image_tokens = []
    for rec in records:
        tokens = 0
        for ref in rec.images:
            try:
                w, h = image_size(ref)
            except ImageError as e:
                bad[e.reason] += 1
                continue
            widths.append(w)
            heights.append(h)
            buckets[size_bucket(w, h)] += 1
            tokens += vl_image_tokens(w, h, vl_min_pixels, vl_max_pixels) + 2  # + vision start/end
        image_tokens.append(tokens)
    out["images"] = {
        "count": len(widths),
        "unreadable_headers": dict(bad),
        "width": _quantiles(widths),
        "height": _quantiles(heights),
        "longest_side": dict(buckets),
    }
    if tokenizer is not None:
        lengths = [t + i for t, i in zip(_token_lengths(records, tokenizer, chat), image_tokens, strict=True)]
        vl = out["with_images"] > 0
        limits = VL_LIMITS if vl else TEXT_LIMITS
        limit = prompt_limit or limits["prompt"]
        out["prompt_tokens"] = {
            **_quantiles(lengths),
            "limit": limit,
            "over_limit": sum(n > limit for n in lengths),
            "paper_limits": "vl" if vl else "text",
            "response_limit": limits["response"],
        }
    return out


def _token_lengths(records: Sequence[Record], tokenizer: Any, chat: bool) -> list[int]:
    texts = [r.problem.replace("<image>", "") for r in records]
    if chat and getattr(tokenizer, "chat_template", None):
        texts = [
            tokenizer.apply_chat_template(
                [{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True
            )
            for t in texts
        ]
    lengths = []
    batch = 512
    for start in progress(range(0, len(texts), batch), math.ceil(len(texts) / batch), "tokenizing"):
        enc = tokenizer(texts[start : start + batch], add_special_tokens=False)
        lengths += [len(ids) for ids in enc["input_ids"]]
    return lengths


def _fmt(q: dict[str, float]) -> str:
    return " / ".join(f"{q[k]:.0f}" for k in ("min", "p50", "p95", "max")) if q else "-"


def print_stats(name: str, s: dict[str, Any]) -> None:
    rows: list[tuple[str, object]] = [("records", s["records"])]
    rows += [(f"source {k}", v) for k, v in sorted(s["sources"].items())]
    rows += [(f"split {k}", v) for k, v in sorted(s["splits"].items())]
    rows += [("with choices", s["with_choices"]), ("with images", s["with_images"])]
    rows += [(f"answer {k}", v) for k, v in sorted(s["answer_types"].items())]
    img = s["images"]
    if img["count"] or img["unreadable_headers"]:
        rows += [("images", img["count"]), ("width min/p50/p95/max", _fmt(img["width"]))]
        rows += [("height min/p50/p95/max", _fmt(img["height"]))]
        sides = img["longest_side"]
        rows += [(f"longest side {k}", sides[k]) for k in BUCKET_NAMES if k in sides]
        rows += [(f"unreadable: {k}", v) for k, v in sorted(img["unreadable_headers"].items())]
    if "prompt_tokens" in s:
        p = s["prompt_tokens"]
        rows += [
            ("prompt tokens min/p50/p95/max", _fmt(p)),
            (f"prompt > {p['limit']} ({p['paper_limits']})", p["over_limit"]),
        ]
    print_table(f"stats: {name}", ("", "value"), rows)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "stats",
        help="counts, answer types, image sizes and prompt token lengths of record files",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", type=Path, nargs="+", help="record parquet files")
    p.add_argument("--tokenizer", default=None, help="local tokenizer path (enables prompt token lengths)")
    p.add_argument("--chat", action="store_true", help="count the problem inside the chat template")
    p.add_argument("--prompt-limit", type=int, default=None, help="override the paper's prompt limit")
    p.add_argument("--vl-min-pixels", type=int, default=VL_MIN_PIXELS)
    p.add_argument("--vl-max-pixels", type=int, default=VL_MAX_PIXELS)
    p.add_argument("--json", type=Path, default=None, help="also write all statistics to this JSON file")
    p.set_defaults(func=run)


def _load_tokenizer(spec: str) -> Any:
    """``--tokenizer``: a local folder, or a hub id checked in seconds (:mod:`mm_gmpo.hub`)."""
    from transformers import AutoTokenizer  # slow import, only when asked for

    from mm_gmpo.hub import check_hub_id, looks_like_hub_id

    source: str | Path = spec
    if not Path(spec).exists():
        if not looks_like_hub_id(spec):
            raise DataFormatError(spec, "--tokenizer", "no such tokenizer folder")
        source = check_hub_id(spec, "--tokenizer")
    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise DataFormatError(spec, "--tokenizer", f"no tokenizer could be loaded ({exc})") from None


def run(args: argparse.Namespace) -> int:
    tokenizer = _load_tokenizer(args.tokenizer) if args.tokenizer else None
    report = {}
    for path in args.inputs:
        s = compute_stats(
            read_records(path),
            tokenizer,
            chat=args.chat,
            prompt_limit=args.prompt_limit,
            vl_min_pixels=args.vl_min_pixels,
            vl_max_pixels=args.vl_max_pixels,
        )
        print_stats(path.name, s)
        report[str(path)] = s
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
        console.print(f"wrote {args.json}")
    return 0
