"""Row 1: one RL training step (rollout + reward + update), mm-gmpo vs TRL's GMPO trainer.

    python bench/bench_step.py                        # both frameworks, demo-sized step
    python bench/bench_step.py --steps 2 --warmup 1 --prompts 2 --n 2 --max-new-tokens 4   # smoke
    python bench/bench_step.py --side mm-gmpo ...     # one side only (prints one JSON line)

Both sides run in their own subprocess on the same conditions: the same tiny Qwen2 (built once
with ``build_tiny_qwen2``, saved to a folder and loaded from that path, fp32), the same prompts
(``make_comparison_records``, raw problem text, no template), the same G, max new tokens,
sampling (temperature 1, top-p 1, no top-k), micro-batch and optimizer steps per rollout (one
AdamW step per step, lr and grad clip equal), and the same reward check (mm-gmpo's math
verifier through ``RewardScorer``, 2 worker processes with the hard time limit).

mm-gmpo: ``build_run(cfg)`` from ``configs/demo_text.yaml`` with those overrides (HF
``generate`` rollout engine, torch engine), then ``Trainer.rl_step()``.
TRL: ``trl.experimental.gmpo.GMPOTrainer`` on CPU (runs in .venv-bench, see
``bench/setup_bench_env.sh``); a step is one optimizer step, i.e. one generation of
prompts x G completions, then ``gradient_accumulation_steps`` micro-batches; its time is measured
between consecutive ``on_step_end`` callbacks.

A difference in work that stays: with one update pass, TRL skips the old-policy forward (it
takes the current log-probs, detached), while mm-gmpo always recomputes old log-probs in a
no-grad pass (so its ratios are exact even when rollout and trainer numerics differ). The
phase breakdown of mm-gmpo's step is reported so that cost is visible.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (  # noqa: E402
    DEFAULT_OUT,
    REPO,
    Row,
    last_json_line,
    machine_info,
    median,
    run_measured,
    spread,
    venv_python,
    write_row,
)


# ---------------------------------------------------------------- the mm-gmpo side
class _Clock:
    """Seconds per phase, accumulated over one step."""

    def __init__(self) -> None:
        self.t: dict[str, float] = {}

    def add(self, key: str, dt: float) -> None:
        self.t[key] = self.t.get(key, 0.0) + dt

    def wrap(self, key, fn):
        def run(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.add(key, time.perf_counter() - t0)

        return run


class _TimedPath:
    """The policy path with its collate / forward / decode timed (forward split grad vs no-grad)."""

    def __init__(self, inner, clock: _Clock) -> None:
        self._inner, self._clock = inner, clock

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def collate(self, *a, **k):
        return self._clock.wrap("collate", self._inner.collate)(*a, **k)

    def decode(self, *a, **k):
        return self._clock.wrap("decode", self._inner.decode)(*a, **k)

    def forward(self, *a, **k):
        import torch

        key = "update_forward" if torch.is_grad_enabled() else "old_logp_forward"
        return self._clock.wrap(key, self._inner.forward)(*a, **k)


class _TimedEngine:
    def __init__(self, inner, clock: _Clock) -> None:
        self._inner, self._clock = inner, clock

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def backward(self, loss):
        return self._clock.wrap("backward", self._inner.backward)(loss)

    def step(self):
        return self._clock.wrap("optimizer_step", self._inner.step)()


def mm_gmpo_side(args: argparse.Namespace) -> dict:
    import torch

    from mm_gmpo.train.build import build_run
    from mm_gmpo.train.config import load_config

    torch.manual_seed(0)
    out = tempfile.mkdtemp(prefix="bench_step_mm_")
    cfg = load_config(
        REPO / "configs" / "demo_text.yaml",
        [
            f"model.path={args.model}",
            "model.dtype=fp32",
            f"train.output_dir={out}",
            "train.resume=never",
            "train.log_tensorboard=false",
            "train.progress=false",
            f"train.prompts_per_step={args.prompts}",
            f"train.micro_batch_size={args.micro_batch}",
            "train.mini_batches=1",
            "train.ppo_epochs=1",
            f"rollout.n={args.n}",
            f"rollout.max_new_tokens={args.max_new_tokens}",
            "rollout.temperature=1.0",
            "rollout.top_p=1.0",
            "loss.name=gmpo",
            "loss.filter_zero_variance=false",
            f"optim.lr={args.lr}",
            "optim.grad_clip=1.0",
            "reward.kind=math",
            "reward.num_workers=2",
            f"reward.timeout_s={args.reward_timeout}",
            f"data.synthetic_train_size={args.records}",
            "data.eval=",
        ],
    )
    run = build_run(cfg)
    trainer = run.trainer
    clock = _Clock()
    trainer.path = _TimedPath(trainer.path, clock)
    trainer.engine = _TimedEngine(trainer.engine, clock)
    trainer.score = clock.wrap("reward", trainer.score)
    steps, phases, lengths = [], [], []
    try:
        for i in range(args.warmup + args.steps):
            clock.t = {}
            m = trainer.rl_step()
            if i >= args.warmup:
                steps.append(m["time_step_s"])
                phases.append({"generate": m["time_generate_s"], **clock.t})
                lengths.append(m["response_length"])
    finally:
        run.close()
    phase_median = {k: median([p.get(k, 0.0) for p in phases]) for k in phases[0]} if phases else {}
    return {
        "side": "mm-gmpo",
        "step_s": steps,
        "median_step_s": median(steps),
        "phases_median_s": phase_median,
        "response_length": median(lengths),
        "machine": machine_info(),
    }


# ---------------------------------------------------------------- the TRL side
def trl_side(args: argparse.Namespace) -> dict:
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    import torch
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl.experimental.gmpo import GMPOConfig, GMPOTrainer

    from mm_gmpo.data.synthetic import make_comparison_records
    from mm_gmpo.rewards import RewardScorer

    torch.manual_seed(0)
    records = make_comparison_records(args.records, seed=0, split="train")
    dataset = Dataset.from_list([{"prompt": r.problem, "answer": r.answer} for r in records])
    scorer = RewardScorer("math", timeout_s=args.reward_timeout, num_workers=2)

    def math_reward(prompts, completions, answer, **kwargs):
        return list(scorer.score(completions, [{"answer": a} for a in answer]).rewards)

    stamps: list[float] = []
    lengths: list[float] = []

    class StepClock(TrainerCallback):
        def on_train_begin(self, *a, **k):
            stamps.append(time.perf_counter())

        def on_step_end(self, *a, **k):
            stamps.append(time.perf_counter())

        def on_log(self, args_, state, control, logs=None, **k):
            if logs and "completions/mean_length" in logs:
                lengths.append(float(logs["completions/mean_length"]))

    total = args.warmup + args.steps
    out = tempfile.mkdtemp(prefix="bench_step_trl_")
    config = GMPOConfig(
        output_dir=out,
        per_device_train_batch_size=args.micro_batch,
        gradient_accumulation_steps=max(1, (args.prompts * args.n) // args.micro_batch),
        num_generations=args.n,
        max_completion_length=args.max_new_tokens,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        learning_rate=args.lr,
        max_grad_norm=1.0,
        lr_scheduler_type="constant",
        num_iterations=1,
        beta=0.0,
        epsilon=0.4,
        max_steps=total,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        seed=0,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    trainer = GMPOTrainer(
        model=model,
        reward_funcs=math_reward,
        args=config,
        train_dataset=dataset,
        processing_class=tok,
        callbacks=[StepClock()],
    )
    try:
        trainer.train()
    finally:
        scorer.close()
    durations = [b - a for a, b in zip(stamps, stamps[1:])]
    steps = durations[args.warmup :]
    return {
        "side": "trl",
        "trl": trl.__version__,
        "step_s": steps,
        "median_step_s": median(steps),
        "generation_batch_size": config.generation_batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "response_length": median(lengths[args.warmup :]) if lengths else None,
        "machine": machine_info(),
    }


# ---------------------------------------------------------------- orchestration
def _side_cmd(python: Path | str, side: str, args: argparse.Namespace) -> list[str]:
    return [
        str(python),
        str(Path(__file__).resolve()),
        "--side",
        side,
        "--model",
        str(args.model),
        "--prompts",
        str(args.prompts),
        "--n",
        str(args.n),
        "--max-new-tokens",
        str(args.max_new_tokens),
        "--micro-batch",
        str(args.micro_batch),
        "--records",
        str(args.records),
        "--lr",
        str(args.lr),
        "--reward-timeout",
        str(args.reward_timeout),
        "--warmup",
        str(args.warmup),
        "--steps",
        str(args.steps),
    ]


def _run_side(python, side, args) -> dict:
    env = {**os.environ, "TRL_EXPERIMENTAL_SILENCE": "1", "TOKENIZERS_PARALLELISM": "false"}
    res = run_measured(_side_cmd(python, side, args), env=env, timeout=args.side_timeout)
    if res.returncode != 0:
        raise RuntimeError(f"{side} side failed (rc {res.returncode}):\n{res.stderr[-4000:]}")
    out = last_json_line(res.stdout)
    out["peak_rss_mb"] = res.peak_rss_mb
    return out


def orchestrate(args: argparse.Namespace) -> Row:
    from mm_gmpo.testing import build_tiny_qwen2

    if args.model is None:
        args.model = str(build_tiny_qwen2(Path(tempfile.mkdtemp(prefix="bench_tiny_")) / "tiny", seed=0))
    bench_py = venv_python(args.bench_venv)
    setting = (
        f"tiny Qwen2 (build_tiny_qwen2 seed 0, fp32, loaded by path), {args.prompts} prompts x G={args.n}, "
        f"max {args.max_new_tokens} new tokens, micro-batch {args.micro_batch}, one AdamW step per step, "
        f"math verifier reward (2 workers, hard limit {args.reward_timeout} s), "
        f"{args.warmup} warm-up step(s) then median of {args.steps} x {args.rounds} round(s)"
    )
    rounds_mm: list[dict] = []
    rounds_trl: list[dict] = []
    trl_error = None if bench_py else f"{args.bench_venv} absent (run bash bench/setup_bench_env.sh)"
    for _ in range(args.rounds):  # alternate the sides so slow drifts in machine load hit both
        rounds_mm.append(_run_side(sys.executable, "mm-gmpo", args))
        if trl_error is None:
            try:
                rounds_trl.append(_run_side(bench_py, "trl", args))
            except RuntimeError as exc:
                trl_error = str(exc)
    mm_steps = [s for r in rounds_mm for s in r["step_s"]]
    mm_med = median(mm_steps)
    phase_keys = rounds_mm[0]["phases_median_s"].keys()
    phases = {k: median([r["phases_median_s"][k] for r in rounds_mm]) for k in phase_keys}
    details = {
        "mm_gmpo_step_s": mm_steps,
        "mm_gmpo_spread_s": spread(mm_steps),
        "mm_gmpo_phases_median_s": phases,
        "mm_gmpo_response_length": median([r["response_length"] for r in rounds_mm]),
        "mm_gmpo_peak_rss_mb": max(r["peak_rss_mb"] for r in rounds_mm),
        "model": args.model,
    }
    if trl_error is None and rounds_trl:
        trl_steps = [s for r in rounds_trl for s in r["step_s"]]
        trl_med = median(trl_steps)
        details.update(
            {
                "trl_version": rounds_trl[0]["trl"],
                "trl_step_s": trl_steps,
                "trl_spread_s": spread(trl_steps),
                "trl_response_length": median(
                    [r["response_length"] for r in rounds_trl if r["response_length"] is not None]
                ),
                "trl_peak_rss_mb": max(r["peak_rss_mb"] for r in rounds_trl),
                "trl_generation_batch_size": rounds_trl[0]["generation_batch_size"],
                "trl_torch": rounds_trl[0]["machine"]["torch"],
                "trl_transformers": rounds_trl[0]["machine"]["transformers"],
            }
        )
        ratio = mm_med / trl_med
        return Row(
            row=1,
            name="Training step (rollout + reward + update)",
            figure="s per RL step (median)",
            value=mm_med,
            baseline_name=f"TRL {rounds_trl[0]['trl']} trl.experimental.gmpo.GMPOTrainer",
            baseline_value=trl_med,
            ratio=ratio,
            ratio_note="mm-gmpo time / TRL time (lower is better)",
            target="<= 0.5",
            met=ratio <= 0.5,
            conditions=setting,
            details=details,
        )
    return Row(
        row=1,
        name="Training step (rollout + reward + update)",
        figure="s per RL step (median)",
        value=mm_med,
        baseline_name="TRL GMPOTrainer",
        status="baseline not measured",
        target="<= 0.5",
        conditions=setting + f"; TRL side not measured: {trl_error}",
        details=details,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--side", choices=["mm-gmpo", "trl"], default=None, help="run one side only")
    ap.add_argument("--model", default=None, help="model dir (default: a tiny Qwen2 built here)")
    ap.add_argument("--prompts", type=int, default=16, help="prompts per step (the demo's 16)")
    ap.add_argument("--n", type=int, default=8, help="G, samples per prompt (the demo's 8)")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--micro-batch", type=int, default=32)
    ap.add_argument("--records", type=int, default=512, help="synthetic training prompts")
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--reward-timeout", type=float, default=5.0)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=3, help="subprocess pairs, alternating the sides")
    ap.add_argument("--bench-venv", default=".venv-bench")
    ap.add_argument("--side-timeout", type=float, default=1800)
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args(argv)
    if args.side == "mm-gmpo":
        print(json.dumps(mm_gmpo_side(args)))
        return 0
    if args.side == "trl":
        print(json.dumps(trl_side(args)))
        return 0
    row = orchestrate(args)
    path = write_row(row, args.out)
    print(
        json.dumps(
            {
                "row": 1,
                "value": row.value,
                "baseline": row.baseline_value,
                "ratio": row.ratio,
                "written": str(path),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
