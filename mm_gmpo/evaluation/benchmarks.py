"""The benchmarks of the paper's tables and the protocol each is run with.

One registry entry per benchmark says where its file lives under the data folder, how to
read it, which verifier judges it and how it is sampled by default. The paper's protocols:

* math suite (Table 1): greedy decoding (temperature 0), one sample, at most 3000 new tokens,
  the ``qwen_math`` prompt, pass@1 per benchmark and their plain average;
* Geometry3K / MathVision (VL): temperature 0.5, 16 samples per question, mean accuracy over
  all samples (= avg@16 = pass@1 estimated from 16 samples), the ``geometry`` prompt.

Any protocol field can be overridden per run (``EvalProtocol.replace``), which is how avg@k and
pass@k sampling protocols are run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mm_gmpo.data.records import Record
from mm_gmpo.rollout.base import SamplingSettings


@dataclass(frozen=True)
class EvalProtocol:
    """How a benchmark is sampled and judged.

    ``temperature <= 0`` means greedy, which only makes sense with ``n == 1``.
    ``truncated_is_wrong``: a response cut at ``max_new_tokens`` scores 0 even when it boxed
    an answer before the cut. Off by default because the paper's evaluation (the
    understand-r1-zero scripts) grades the text as generated.
    """

    temperature: float = 0.0
    top_p: float = 1.0
    n: int = 1
    max_new_tokens: int = 3000
    template: str = "qwen_math"
    seed: int = 0
    truncated_is_wrong: bool = False

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n (samples per problem) must be >= 1, got {self.n}")
        if self.temperature <= 0 and self.n > 1:
            raise ValueError(
                f"greedy decoding (temperature {self.temperature}) gives {self.n} identical samples; "
                "set a temperature > 0 for avg@k / pass@k"
            )
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    def replace(self, **changes: Any) -> EvalProtocol:
        """A copy with the given (non-None) fields changed."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def sampling(
        self, stop_token_ids: list[int] | tuple[int, ...], seed: int | None = None
    ) -> SamplingSettings:
        return SamplingSettings(
            n=self.n,
            temperature=self.temperature,
            top_p=1.0 if self.greedy else self.top_p,
            max_new_tokens=self.max_new_tokens,
            stop_token_ids=tuple(stop_token_ids),
            seed=self.seed if seed is None else seed,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        """One line for table captions, e.g. ``greedy, 1 sample, max 3000 new tokens, qwen_math``."""
        how = "greedy" if self.greedy else f"temperature {self.temperature:g}, top-p {self.top_p:g}"
        samples = f"{self.n} sample" + ("s" if self.n > 1 else "")
        return f"{how}, {samples}, max {self.max_new_tokens} new tokens, {self.template} prompt"


MATH_PROTOCOL = EvalProtocol()
VL_PROTOCOL = EvalProtocol(temperature=0.5, top_p=1.0, n=16, max_new_tokens=2048, template="geometry")


def _load_generic(path: Path | str, name: str) -> list[Record]:
    """jsonl / parquet (record files from data_prep included) / arrow / HF id (``id@split``
    picks a split when the dataset has several). Strict: a bad row stops the run, since a
    silently shrunken benchmark changes the reported score."""
    from mm_gmpo.data.loaders import load_records_with_report

    return load_records_with_report(str(path), source=name, on_bad_record="error").records


def _load_geometry3k(path: Path | str) -> list[Record]:
    """Geometry3K's test split from any published form, as the same canonical records
    (``data_prep.geometry3k``): a record file made by ``python -m data_prep geometry3k``, an
    unpacked release folder (Inter-GPS folders or the parquet files), or the hub id
    ``hiyouga/geometry3k`` (``@split`` picks another split; default ``test``)."""
    from data_prep import geometry3k
    from data_prep.common import DataFormatError
    from mm_gmpo.data.loaders import looks_like_hf_id, split_hf_source

    p = Path(path)
    if p.is_dir():
        try:
            layout = geometry3k.detect_layout(p)
        except DataFormatError:
            return _load_generic(path, "geometry3k")  # a save_to_disk folder of records
        return geometry3k.convert(p, layout, splits=("test",), check_images=False)["test"]
    if not p.exists():
        name, split = split_hf_source(str(path))
        if looks_like_hf_id(str(name)):
            return geometry3k.read_hub(str(name), split or "test")
    return _load_generic(path, "geometry3k")


def _load_mathvision(path: Path | str) -> list[Record]:
    """The published MathVision jsonl (through data_prep's converter, which places the image
    tags and keeps letter answers with their options) or a record file already converted."""
    p = Path(path)
    if p.suffix == ".jsonl" or p.is_dir():
        from data_prep.mathvision import convert

        return convert(p, check_images=False)
    return _load_generic(path, "mathvision")


@dataclass(frozen=True)
class Benchmark:
    """A registry entry.

    ``title`` is the column header of the paper's tables; ``kind`` picks the verifier
    (``RewardScorer(kind)``); ``modality`` picks the policy path (text or VL);
    ``relative_path`` is where the file lives under the data folder.
    """

    name: str
    title: str
    kind: Literal["math", "geometry"]
    modality: Literal["text", "vl"]
    relative_path: str
    protocol: EvalProtocol
    size: int | None = None
    loader: Callable[[Path | str], list[Record]] | None = None
    hint: str = ""

    def load(self, path: Path | str) -> list[Record]:
        if self.loader is not None:
            return self.loader(path)
        return _load_generic(path, self.name)


MATH_BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark("aime24", "AIME24", "math", "text", "math/aime24.jsonl", MATH_PROTOCOL, 30),
    Benchmark("amc23", "AMC", "math", "text", "math/amc23.jsonl", MATH_PROTOCOL, 83),
    Benchmark("math500", "MATH500", "math", "text", "math/math500.jsonl", MATH_PROTOCOL, 500),
    Benchmark("minerva_math", "Minerva", "math", "text", "math/minerva_math.jsonl", MATH_PROTOCOL, 272),
    Benchmark(
        "olympiadbench", "OlympiadBench", "math", "text", "math/olympiadbench.jsonl", MATH_PROTOCOL, 675
    ),
)

VL_BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark(
        "geometry3k",
        "Geometry3K",
        "geometry",
        "vl",
        "geometry3k/test.parquet",
        VL_PROTOCOL,
        601,
        loader=_load_geometry3k,
        hint="Geometry3K is not shipped: convert it once with `python -m data_prep geometry3k SRC "
        "--out-dir {data}/geometry3k` (SRC: the Inter-GPS release or hiyouga/geometry3k's parquet "
        "files), or read the hub copy with --data geometry3k=hiyouga/geometry3k@test; "
        "--benchmarks mathvision runs on the shipped data",
    ),
    Benchmark(
        "mathvision",
        "MathVision",
        "geometry",
        "vl",
        "mathvision/testmini.jsonl",
        VL_PROTOCOL,
        304,
        loader=_load_mathvision,
    ),
)

BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (*MATH_BENCHMARKS, *VL_BENCHMARKS)}
# Short names people type (and the paper's titles) for the registry keys.
ALIASES = {
    "aime": "aime24",
    "amc": "amc23",
    "minerva": "minerva_math",
    "olympiad": "olympiadbench",
    "geo3k": "geometry3k",
    **{b.title.lower(): b.name for b in BENCHMARKS.values()},
}


def get_benchmark(name: str) -> Benchmark:
    """Registry lookup by key, alias or title (case-insensitive); the error lists the names."""
    key = name.lower()
    key = ALIASES.get(key, key)
    if key not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[key]


def benchmark_order(names: list[str]) -> list[str]:
    """Registry order first (the paper's column order), then unknown names sorted."""
    known = [b for b in BENCHMARKS if b in names]
    return known + sorted(n for n in names if n not in BENCHMARKS)


def resolve_source(bench: Benchmark, data_dir: Path, override: str | None = None) -> str:
    """Where a benchmark is read from: an explicit path / HF id, else ``data_dir/relative_path``.

    A relative override that is not in the working directory is looked up under ``data_dir``.
    A missing default file is one line that says where it was looked for and how to make it.
    """
    from mm_gmpo.data.loaders import resolve_data_source

    if override:
        return str(resolve_data_source(override, Path(data_dir)))
    path = Path(data_dir) / bench.relative_path
    if not path.exists():
        if bench.hint:
            raise FileNotFoundError(f"{bench.name}: {path} not found. {bench.hint.format(data=data_dir)}")
        raise FileNotFoundError(
            f"{bench.name}: {path} not found (set --data-dir / $MM_GMPO_DATA_DIR, "
            f"or --data {bench.name}=PATH_OR_HF_ID)"
        )
    return str(path)


def load_benchmark(
    bench: Benchmark, data_dir: Path, override: str | None = None, limit: int | None = None
) -> tuple[str, list[Record]]:
    """(source, records): the first ``limit`` records when a limit is given."""
    source = resolve_source(bench, data_dir, override)
    records = bench.load(source)
    if not records:
        raise ValueError(f"{bench.name}: {source} holds no records")
    if limit is not None:
        records = records[:limit]
    return source, records
