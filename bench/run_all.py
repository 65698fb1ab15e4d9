"""Run every benchmark and write bench/RESULTS.md.

    python bench/run_all.py                 # the full set (about 30-40 min on 2 busy cores)
    python bench/run_all.py --only 3 4      # some rows; the others keep their last rows/*.json
    python bench/run_all.py --render        # only re-render RESULTS.md from bench/results/

Each benchmark is its own script (runnable alone, see its --help) that writes
``bench/results/row<N>.json``; this script runs them in fresh processes one after another
(nothing else of ours runs meanwhile), then renders the table from the row files, so every
number in RESULTS.md comes from a file a benchmark wrote.

    1  bench_step.py          RL step, mm-gmpo vs TRL GMPOTrainer   (TRL in .venv-bench)
    2  bench_rollout_row.py   rollout tokens/s, vLLM vs HF engine   (in .venv-vllm)
    9  bench_rollout_row.py --vl   the same on the tiny Qwen2.5-VL with pictures (in .venv-vllm)
    3  bench_objective.py     GMPO loss + backward vs per-sample loop
    4  bench_verifier.py      verifier answers/s, 2 cores, hard limits
    5  bench_demo.py          CPU demos: wall time, peak RSS
    6  gpu_step.py            DeepSpeed bf16 step on a 1.5B shape (GPU only; dry run here)
    7  bench_logprobs.py      update log-probs at the paper's shapes: memory and time vs today's
    8  bench_padding.py       padded positions and update time, fixed vs token-budget micro-batches
    10 bench_lora.py          full fine-tuning vs LoRA: peak memory and step time, same model and batch
    -  profile_step.py        py-spy profile of mm-gmpo's step (the notes)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import BENCH_DIR, DEFAULT_OUT, REPO, machine_info, read_rows, venv_python  # noqa: E402

SCRIPTS = {
    3: ["bench_objective.py"],
    4: ["bench_verifier.py"],
    2: ["bench_rollout_row.py"],
    9: ["bench_rollout_row.py", "--vl"],
    1: ["bench_step.py"],
    5: ["bench_demo.py"],
    6: ["gpu_step.py"],  # no GPU: writes the dry-run row
    7: ["bench_logprobs.py"],  # needs ~17 GB free for its reference variant (it waits for it)
    8: ["bench_padding.py"],
    10: ["bench_lora.py"],
    0: ["profile_step.py"],  # 0: the profile for the notes
}
QUICK_ARGS = {
    3: ["--batch", "8", "--seq", "64", "--repeats", "2"],
    4: ["--runs", "1", "--rounds", "1"],
    2: ["--runs", "1", "--prompts", "2", "--n", "2", "--max-new-tokens", "8", "--repeats", "1"],
    9: ["--runs", "1", "--prompts", "2", "--n", "2", "--max-new-tokens", "8", "--repeats", "1"],
    1: [
        "--prompts",
        "2",
        "--n",
        "2",
        "--max-new-tokens",
        "4",
        "--micro-batch",
        "2",
        "--records",
        "16",
        "--warmup",
        "1",
        "--steps",
        "2",
        "--rounds",
        "1",
    ],
    5: ["--quick", "--runs", "1"],
    6: ["--dry-run"],
    7: ["--prompt", "16", "--response", "40", "--vocab", "5000", "--rounds", "1"],
    8: ["--prompts", "64", "--time-prompts", "4", "--rounds", "1"],
    10: ["--hidden", "128", "--layers", "2", "--rounds", "1"],
    0: ["--prompts", "2", "--n", "2", "--max-new-tokens", "4", "--micro-batch", "2", "--steps", "1"],
}


def run_benchmarks(rows: list[int], out: Path, quick: bool) -> dict[int, dict]:
    log = {}
    for row in [r for r in SCRIPTS if r in rows]:
        script, *fixed = SCRIPTS[row]
        cmd = [sys.executable, str(BENCH_DIR / script), *fixed, "--out", str(out)]
        cmd += QUICK_ARGS[row] if quick else []
        print(f"[bench] row {row}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        dt = time.perf_counter() - t0
        tail = (proc.stdout.strip().splitlines() or [""])[-1]
        print(f"[bench] row {row}: rc {proc.returncode} in {dt:.0f} s  {tail[:300]}", flush=True)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
        log[row] = {
            "returncode": proc.returncode,
            "seconds": round(dt, 1),
            "stderr_tail": proc.stderr[-1500:],
        }
    return log


# ---------------------------------------------------------------- rendering
def _fmt(x, digits: int = 3) -> str:
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        if abs(x) >= 1000:
            return f"{x:,.0f}"
        return f"{x:.{digits}g}"
    return str(x)


def _met(row: dict) -> str:
    if row.get("met") is None:
        return "—"
    return "**met**" if row["met"] else "not met"


def _row1_cells(r: dict) -> tuple[str, str]:
    d = r["details"]
    mm = f"{_fmt(r['value'])} s (spread {d.get('mm_gmpo_spread_s', '')})"
    base = (
        f"{_fmt(r['baseline_value'])} s (spread {d.get('trl_spread_s', '')})"
        if r.get("baseline_value") is not None
        else "not measured"
    )
    return mm, base


def _row5_cells(r: dict) -> tuple[str, str]:
    parts = []
    for name, d in r["details"].get("demos", {}).items():
        if d.get("ok_runs"):
            parts.append(
                f"{name}: {_fmt(d['wall_s'])} s, {_fmt(d['peak_rss_mb'])} MB "
                f"(tree {_fmt(d['peak_tree_rss_mb'])} MB)"
            )
        else:
            parts.append(f"{name}: failed ({d.get('error', '')[:120]})")
    return "; ".join(parts) or "no demo config found", "—"


def _row6_cells(r: dict) -> tuple[str, str]:
    d = r["details"]
    if r["status"] == "measured":
        return f"{_fmt(r['value'])} tokens/s", f"{_fmt(r['baseline_value'])} TFLOP/s peak"
    why = "no GPU lent to this task" if not machine_info().get("cuda") else r["status"]
    return f"not measured: {why}", f"{d.get('flops_per_token', 0) / 1e9:.2f} GFLOPs/token counted"


def _row7_cells(r: dict) -> tuple[str, str]:
    d = r["details"]
    med, mem = d.get("median_s", {}), d.get("peak_extra_mb", {})

    def cell(v: str) -> str:
        if mem.get(v) is None:
            err = d.get("variants", {}).get(v, {}).get("error", "not measured")
            return f"{v}: not measured ({err[:80]})"
        return f"{_fmt(mem[v])} MB, {_fmt(med[v])} s"

    mm = f"chunked {cell('chunked')}"
    base = f"reference {cell('reference')}; TRL's per-row method {cell('trl')}"
    return mm, base


def _row8_cells(r: dict) -> tuple[str, str]:
    d = r["details"]
    t = d["timing"]["median_s"]
    mm = f"{100 * r['value']:.1f}% padded ({d['budget']['micro_batches']} micro-batches); update {_fmt(t['budget'])} s"
    base = (
        f"{100 * r['baseline_value']:.1f}% padded ({d['fixed']['micro_batches']} micro-batches); "
        f"update {_fmt(t['fixed'])} s"
    )
    return mm, base


def _row10_cells(r: dict) -> tuple[str, str]:
    v = r["details"]["variants"]
    mm = f"LoRA {_fmt(v['lora']['peak_mb'])} MB, {_fmt(v['lora']['median_s'])} s/step"
    base = f"full {_fmt(v['full']['peak_mb'])} MB, {_fmt(v['full']['median_s'])} s/step"
    return mm, base


def _row1_estimates(r: dict) -> str:
    """Arithmetic on the measured phases (estimates, not measurements): what bounds the ratio."""
    ph, v, b = r["details"]["mm_gmpo_phases_median_s"], r["value"], r["baseline_value"]
    update = sum(ph.get(k, 0.0) for k in ("update_forward", "backward", "optimizer_step"))
    if "old_logp_forward" in ph:
        no_old = v - ph["old_logp_forward"]
        old_text = (
            f"without the old-log-prob pass (which TRL skips with one update pass) the step would take "
            f"{no_old:.3g} s, ratio {no_old / b:.2f}"
        )
    else:
        old_text = "the step already skips the old-log-prob pass, as TRL does with one update pass"
    return (
        f"Estimates from the measured phases (not measurements): {old_text}; the update alone "
        f"(forward + backward + optimizer, the same kernels TRL "
        f"runs) is {update:.3g} s, ratio {update / b:.2f}, before any rollout or reward."
    )


def _ratio_cell(r: dict) -> str:
    if r.get("ratio") is None:
        return "—"
    if r["row"] == 7 and r["details"].get("time_ratio") is not None:
        return f"memory **{r['ratio']:.3g}**, time **{r['details']['time_ratio']:.3g}**"
    if r["row"] == 8:
        return f"time **{r['ratio']:.3g}**"
    if r["row"] == 10:
        return f"memory **{r['ratio']:.3g}**, time **{r['details']['time_ratio']:.3g}**"
    return f"**{r['ratio']:.3g}**"


def _met_figure(r: dict) -> str:
    """What the target was judged on, for the targets section."""
    if r["row"] == 7 and r["details"].get("time_ratio") is not None:
        return f"memory ratio {r['ratio']:.3g}, time ratio {r['details']['time_ratio']:.3g}"
    if r["row"] == 10:
        return f"memory ratio {r['ratio']:.3g}, time ratio {r['details']['time_ratio']:.3g}"
    if r["row"] == 8:
        return f"{100 * r['value']:.1f}% padded, today's cut {100 * r['baseline_value']:.1f}%; time ratio {r['ratio']:.3g}"
    return f"ratio {r['ratio']:.3g}"


def render(out: Path, md_path: Path, run_log: dict | None = None, started: dict | None = None) -> str:
    rows = {r["row"]: r for r in read_rows(out)}
    profile_path = out / "profile.json"
    profile = json.loads(profile_path.read_text()) if profile_path.exists() else None
    now = machine_info()
    lines = ["# mm-gmpo benchmark results", ""]
    lines.append(
        "Written by `python bench/run_all.py` from the row files in `bench/results/` (one per benchmark)."
    )
    lines.append("Every figure is a median of several timed repetitions after warm-up, and every ratio")
    lines.append("compares two things measured in the same run on the same machine.")
    lines += ["", "## Machine", ""]
    first = started or next(iter(rows.values()), {}).get("machine", now)
    lines.append(f"- date: {now['date_utc']} (rows written between the dates in each row file)")
    lines.append(
        f"- CPU: {now['cpu']}, {now['cores_available']} cores available, {now['mem_total_gb']} GB RAM"
    )
    lines.append(f"- GPU: {now.get('cuda') or 'none'}")
    lines.append(
        f"- threads: every benchmark process ran with {now['bench_threads']} intra-op thread(s) "
        "(OMP_NUM_THREADS; set MM_GMPO_BENCH_THREADS to change), both sides of each comparison alike"
    )
    lines.append(
        f"- python {now['python']}, torch {now['torch']}, transformers {now['transformers']} (main .venv)"
    )
    if 1 in rows and rows[1]["details"].get("trl_version"):
        d = rows[1]["details"]
        lines.append(
            f"- .venv-bench: TRL {d['trl_version']}, torch {d['trl_torch']}, transformers {d['trl_transformers']}"
        )
    loads = [r["machine"]["load_avg_1_5_15"] for r in rows.values() if r.get("machine")]
    if loads:
        lo = min(x[0] for x in loads)
        hi = max(x[0] for x in loads)
        lines.append(
            f"- load: the 2 cores are shared with other jobs; 1-min load average {lo}-{hi} when rows were "
            f"written (at start of this run: {first.get('load_avg_1_5_15')}). Absolute figures are noisy; "
            "ratios pair sides measured in the same run, alternated where the bench has rounds."
        )
    lines += ["", "## Results", ""]
    lines.append("| # | benchmark | mm-gmpo | baseline (same run) | ratio | target | met |")
    lines.append("|---|---|---|---|---|---|---|")
    for n in sorted(rows):
        r = rows[n]
        if n == 1:
            mm, base = _row1_cells(r)
        elif n == 5:
            mm, base = _row5_cells(r)
        elif n == 6:
            mm, base = _row6_cells(r)
        elif n == 7:
            mm, base = _row7_cells(r)
        elif n == 8:
            mm, base = _row8_cells(r)
        elif n == 10:
            mm, base = _row10_cells(r)
        elif n == 3:
            d = r["details"]
            mm = f"{_fmt(r['value'])} ms (GRPO {_fmt(d.get('grpo_ms_median'))} ms)"
            base = f"{_fmt(r['baseline_value'])} ms"
        elif r.get("value") is None:
            mm, base = r["status"], "—"
        else:
            unit = "tokens/s" if n in (2, 9) else "answers/s" if n == 4 else ""
            mm, base = f"{_fmt(r['value'])} {unit}", f"{_fmt(r['baseline_value'])} {unit}"
        lines.append(
            f"| {n} | {r['name']} | {mm} | {base} | {_ratio_cell(r)} | {r['target'] or '—'} | {_met(r)} |"
        )
    lines += ["", "### What each row measured", ""]
    for n in sorted(rows):
        r = rows[n]
        text = f"**{n}. {r['name']}** — {r['figure']}. Baseline: {r['baseline_name'] or 'none'}."
        if r.get("ratio_note"):
            text += f" Ratio: {r['ratio_note']}."
        text += f" Conditions: {r['conditions']}."
        lines += [text, ""]
        if n == 1 and r["details"].get("mm_gmpo_phases_median_s"):
            ph = r["details"]["mm_gmpo_phases_median_s"]
            total = r["value"] or 1.0
            parts = ", ".join(
                f"{k} {v:.2f} s ({100 * v / total:.0f}%)"
                for k, v in sorted(ph.items(), key=lambda kv: -kv[1])
            )
            lines += [f"mm-gmpo step, median time per phase: {parts}.", ""]
            d = r["details"]
            lines += [
                f"Mean response length: mm-gmpo {_fmt(d.get('mm_gmpo_response_length'))}, "
                f"TRL {_fmt(d.get('trl_response_length'))} tokens; peak RSS of the trainer process: "
                f"mm-gmpo {_fmt(d.get('mm_gmpo_peak_rss_mb'))} MB, TRL {_fmt(d.get('trl_peak_rss_mb'))} MB.",
                "",
            ]
        if n == 5:
            for name, d in r["details"].get("demos", {}).items():
                for run in d.get("runs", []):
                    acc = (
                        f", held-out accuracy {run['acc_before']:.3f} -> {run['acc_after']:.3f}"
                        if "acc_before" in run
                        else ""
                    )
                    lines.append(
                        f"- {name} demo ({run['config']}): rc {run['returncode']}, {run['wall_s']:.0f} s wall{acc}"
                    )
            if not (REPO / "configs" / "demo_vl.yaml").exists():
                lines.append("- VL demo: configs/demo_vl.yaml does not exist yet; not measured.")
            lines.append("")
    lines += ["## Targets and limits", ""]
    for n in sorted(rows):
        r = rows[n]
        if r.get("met") is True:
            lines.append(f"- Row {n}: target {r['target']} met ({_met_figure(r)}).")
        elif r.get("met") is False:
            lines.append(f"- Row {n}: target {r['target']} **not met** ({_met_figure(r)}).")
        else:
            lines.append(f"- Row {n}: no pass/fail target ({r['status']}).")
        if n == 1 and r.get("baseline_value") and r["details"].get("mm_gmpo_phases_median_s"):
            lines.append("  " + _row1_estimates(r))
    if profile and "phase_share" in profile:
        share = ", ".join(f"{k} {100 * v:.0f}%" for k, v in profile["phase_share"].items())
        lines += [
            "",
            f"Profile of mm-gmpo's step (py-spy, {profile.get('setting', '')}): share of samples per phase: {share}.",
            "",
            f"Slowest phase: **{profile['slowest_phase']}**. Inside it "
            f"{100 * profile['slowest_model_forward_share']:.0f}% of the samples are in the Qwen2 forward "
            f"(model compute) and {100 * profile['slowest_python_share']:.0f}% in the code around it.",
            "",
            "Top leaf functions in that phase (share of its samples): "
            + ", ".join(f"`{k}` {100 * v:.0f}%" for k, v in profile["slowest_top_leaves"][:8])
            + ".",
            "",
            "Outside the model forward, the frames holding that phase's time: "
            + ", ".join(f"`{k}` {100 * v:.0f}%" for k, v in profile["slowest_top_python_outside_model"][:8])
            + ".",
        ]
    elif profile:
        lines += ["", f"Profile: {profile.get('error')}"]
    notes = BENCH_DIR / "NOTES.md"
    if notes.exists():
        lines += ["", notes.read_text().strip()]
    if run_log:
        failed = {k: v for k, v in run_log.items() if v["returncode"] != 0}
        if failed:
            lines += ["", "## Benchmarks that failed in this run", ""]
            for k, v in failed.items():
                lines.append(
                    f"- row {k}: rc {v['returncode']}: `{v['stderr_tail'].strip().splitlines()[-1:]}`"
                )
    text = "\n".join(lines) + "\n"
    md_path.write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", type=int, nargs="+", default=None, help="rows to run (0: the profile)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run; not figures to publish)")
    ap.add_argument("--render", action="store_true", help="only render RESULTS.md from the row files")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--md", default=str(BENCH_DIR / "RESULTS.md"))
    ap.add_argument(
        "--setup", action="store_true", help="create .venv-bench first (bench/setup_bench_env.sh)"
    )
    args = ap.parse_args(argv)
    out = Path(args.out)
    started = machine_info()
    log = None
    if not args.render:
        if args.setup or venv_python(".venv-bench") is None:
            rc = subprocess.run(["bash", str(BENCH_DIR / "setup_bench_env.sh")], cwd=REPO).returncode
            if rc != 0:
                print("[bench] .venv-bench could not be set up; row 1 will say so", file=sys.stderr)
        rows = args.only if args.only is not None else list(SCRIPTS)
        log = run_benchmarks(rows, out, args.quick)
    render(out, Path(args.md), log, started)
    print(f"[bench] wrote {args.md}")
    return 0 if not log or all(v["returncode"] == 0 for v in log.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
