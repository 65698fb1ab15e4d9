"""Row 5: wall time and peak memory (RSS) of each CPU demo.

    python bench/bench_demo.py              # the full demos (configs/demo_text.yaml, demo_vl.yaml if present)
    python bench/bench_demo.py --quick      # one RL step each, for the smoke test

Each demo runs as ``python -m mm_gmpo demo --config <yaml>`` in a fresh subprocess. Peak RSS is
read two ways: the largest single process (``wait4``'s ``ru_maxrss``: the trainer) and the
whole process tree (sampled with psutil every 0.2 s: trainer + reward workers). A demo that is
absent is left out; one that fails is recorded as failed with its last error line.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import DEFAULT_OUT, REPO, Row, median, run_measured, write_row  # noqa: E402

DEMOS = {"text": "demo_text.yaml", "vl": "demo_vl.yaml"}
QUICK = [
    "train.steps=1",
    "warm_start.steps=1",
    "data.eval_limit=4",
    "train.prompts_per_step=2",
    "rollout.n=2",
    "train.log_tensorboard=false",
]
DEMO_LINE = re.compile(r"held-out accuracy ([\d.]+) -> ([\d.]+) in ([\d.]+) s")


def run_demo(config: Path, quick: bool, timeout: float) -> dict:
    out = tempfile.mkdtemp(prefix=f"bench_demo_{config.stem}_")
    cmd = [sys.executable, "-m", "mm_gmpo", "demo", "--config", str(config), "--output-dir", out]
    cmd += [*QUICK, "train.progress=false"] if quick else ["train.progress=false"]
    res = run_measured(cmd, timeout=timeout)
    result = {
        "config": str(config.relative_to(REPO)),
        "returncode": res.returncode,
        "wall_s": res.wall_s,
        "peak_rss_mb": res.peak_rss_mb,
        "peak_tree_rss_mb": res.peak_tree_rss_mb,
    }
    m = DEMO_LINE.search(res.stdout)
    if m:
        result.update(
            acc_before=float(m.group(1)), acc_after=float(m.group(2)), train_wall_s=float(m.group(3))
        )
    if res.returncode != 0:
        lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
        result["error"] = lines[-1][:300] if lines else "no stderr"
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one RL step per demo (smoke test)")
    ap.add_argument("--runs", type=int, default=3, help="runs per demo (median)")
    ap.add_argument("--only", choices=sorted(DEMOS), default=None)
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args(argv)

    per_demo: dict[str, dict] = {}
    for name, fname in DEMOS.items():
        config = REPO / "configs" / fname
        if (args.only and name != args.only) or not config.exists():
            continue
        runs = [run_demo(config, args.quick, args.timeout) for _ in range(args.runs)]
        ok = [r for r in runs if r["returncode"] == 0]
        summary = {"runs": runs, "ok_runs": len(ok)}
        if ok:
            summary.update(
                wall_s=median([r["wall_s"] for r in ok]),
                peak_rss_mb=median([r["peak_rss_mb"] for r in ok]),
                peak_tree_rss_mb=median([r["peak_tree_rss_mb"] for r in ok]),
            )
        else:
            summary["error"] = runs[-1].get("error", "failed")
        per_demo[name] = summary
    text = per_demo.get("text", {})
    ok = [d for d in per_demo.values() if d["ok_runs"]]
    row = Row(
        row=5,
        name="CPU demos: wall time and peak RSS" + (" (--quick)" if args.quick else ""),
        figure="s wall / MB peak RSS (largest process; whole tree in details)",
        value=text.get("wall_s"),
        baseline_name="none (no peer runs these demos); figures only",
        status="measured" if ok else "failed",
        conditions=(
            ("quick mode: " + " ".join(QUICK) + "; " if args.quick else "full demo configs; ")
            + f"median of {args.runs} run(s) each, `python -m mm_gmpo demo --config <yaml>`, fresh process"
        ),
        details={"demos": per_demo},
    )
    path = write_row(row, args.out)
    print(
        json.dumps(
            {
                "row": 5,
                **{
                    k: {kk: v.get(kk) for kk in ("wall_s", "peak_rss_mb", "error")}
                    for k, v in per_demo.items()
                },
                "written": str(path),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
