"""Profile of mm-gmpo's RL step with py-spy: where the time goes, and what limits the slowest phase.

    python bench/profile_step.py                      # the row-1 step (16 prompts x G=8, 64 tokens)
    python bench/profile_step.py --prompts 2 --n 2 --max-new-tokens 4 --steps 1   # smoke

Samples ``bench_step.py --side mm-gmpo`` (the same step row 1 times) with ``py-spy record``
(a sampling profiler: no instrumentation overhead in the Python-heavy parts), then sorts every
sample of the RL step into a phase by its stack (rollout generate, reward, old-log-prob forward,
update forward, loss, backward, optimizer step) and, inside the slowest phase, splits model
compute (the Qwen2 forward) from the Python around it and lists the leaf functions that hold
the most samples. Writes ``profile.json`` next to the rows; ``run_all.py`` puts it in the notes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import DEFAULT_OUT, REPO  # noqa: E402

HERE = Path(__file__).resolve().parent
FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _loop_markers() -> tuple[int, int, int]:
    """Line numbers in loop.py where the old-log-prob pass, the update passes and the metrics begin."""
    lines = (REPO / "mm_gmpo" / "train" / "loop.py").read_text().splitlines()

    def find(text: str) -> int:
        return next(i + 1 for i, line in enumerate(lines) if text in line)

    return find("# 3. old-policy"), find("# 4. K passes"), find("# 5. metrics")


def _frames(stack: str) -> list[tuple[str, str, int, str]]:
    """(function name, file, line, qualified name) per frame, outermost first."""
    out = []
    for raw in stack.split(";"):
        m = FRAME.match(raw.strip())
        if m:
            qual = m["func"]
            out.append((qual.rsplit(".", 1)[-1], m["file"], int(m["line"] or 0), qual))
        else:
            out.append((raw.strip(), "", 0, raw.strip()))
    return out


def phase_of(frames: list[tuple[str, str, int, str]], markers: tuple[int, int, int]) -> str:
    """The phase of one sample: decided by the rl_step frame's line and the frames below it."""
    old_start, upd_start, met_start = markers
    idx = next(
        (i for i, f in enumerate(frames) if f[0] == "rl_step" and f[1].endswith("train/loop.py")), None
    )
    if idx is None:
        return "outside the step"
    line = frames[idx][2]
    below = frames[idx + 1 :]
    files = " ".join(f"{f[0]}@{f[1]}" for f in below)
    if "rollout/hf.py" in files or "rollout/vllm.py" in files:
        return "rollout generate"
    if "rewards/" in files or "score@" in files:
        return "reward"
    if "decode@" in files:
        return "decode"
    if "collate@" in files or "pad_ragged@" in files:
        return "collate"
    if old_start <= line < upd_start:
        return "old log-probs (no-grad forward)"
    if upd_start <= line < met_start:
        if "compute_policy_loss@" in files:
            return "loss"
        if "backward@" in files:
            return "backward"
        if "step@" in files and "engine.py" in files:
            return "optimizer step"
        if "forward@" in files:
            return "update forward"
        return "update (other)"
    if line >= met_start:
        return "weight sync + metrics"
    return "step (other)"


def analyse(raw_path: Path, top: int = 10) -> dict:
    markers = _loop_markers()
    phases: Counter[str] = Counter()
    samples: list[tuple[str, list[tuple[str, str, int, str]], int]] = []
    for line in raw_path.read_text().splitlines():
        if not line.strip():
            continue
        stack, _, count = line.rpartition(" ")
        try:
            n = int(count)
        except ValueError:
            continue
        frames = _frames(stack)
        phase = phase_of(frames, markers)
        phases[phase] += n
        samples.append((phase, frames, n))
    in_step = {k: v for k, v in phases.items() if k != "outside the step"}
    total = sum(in_step.values()) or 1
    slowest = max(in_step, key=in_step.get) if in_step else None
    model_compute = python_side = 0
    leaves: Counter[str] = Counter()
    callers: Counter[str] = Counter()
    for phase, frames, n in samples:
        if phase != slowest:
            continue
        in_model = any(f[0] == "forward" and "modeling_qwen2" in f[1] for f in frames)
        if in_model:
            model_compute += n
        else:
            python_side += n
            # the innermost non-torch frame outside the model: which Python holds the time
            outer = next(
                (f for f in reversed(frames) if "torch/" not in f[1] and not f[1].startswith("<")), frames[-1]
            )
            callers[f"{outer[3]} ({_short(outer[1])})"] += n
        leaf = frames[-1]
        leaves[f"{leaf[3]} ({_short(leaf[1])})"] += n
    n_slow = max(1, in_step.get(slowest, 0))
    return {
        "samples_in_step": total,
        "phase_share": {k: round(v / total, 4) for k, v in sorted(in_step.items(), key=lambda kv: -kv[1])},
        "slowest_phase": slowest,
        "slowest_model_forward_share": round(model_compute / n_slow, 4),
        "slowest_python_share": round(python_side / n_slow, 4),
        "slowest_top_leaves": [(k, round(v / n_slow, 4)) for k, v in leaves.most_common(top)],
        "slowest_top_python_outside_model": [(k, round(v / n_slow, 4)) for k, v in callers.most_common(top)],
    }


def _short(path: str) -> str:
    for key in ("site-packages/", "mm_gmpo/"):
        if key in path:
            return path.split(key, 1)[1] if key == "site-packages/" else "mm_gmpo/" + path.split(key, 1)[1]
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--micro-batch", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    ap.add_argument("--model", default=None)
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args(argv)

    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not Path(pyspy).exists():
        result = {"error": "py-spy not installed"}
    else:
        if args.model is None:
            from mm_gmpo.testing import build_tiny_qwen2

            args.model = str(build_tiny_qwen2(Path(tempfile.mkdtemp(prefix="bench_tiny_")) / "tiny", seed=0))
        raw = Path(tempfile.mkdtemp(prefix="bench_prof_")) / "profile.txt"
        side = [
            sys.executable,
            str(HERE / "bench_step.py"),
            "--side",
            "mm-gmpo",
            "--model",
            args.model,
            "--prompts",
            str(args.prompts),
            "--n",
            str(args.n),
            "--max-new-tokens",
            str(args.max_new_tokens),
            "--micro-batch",
            str(args.micro_batch),
            "--records",
            str(max(64, args.prompts * 4)),
            "--warmup",
            str(args.warmup),
            "--steps",
            str(args.steps),
        ]
        cmd = [pyspy, "record", "--format", "raw", "--rate", str(args.rate), "-o", str(raw), "--", *side]
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        if proc.returncode != 0 or not raw.exists():
            result = {"error": f"py-spy failed (rc {proc.returncode}): {proc.stderr.strip()[-500:]}"}
        else:
            result = analyse(raw)
            shutil.copyfile(raw, out_dir / "profile_raw.txt")  # py-spy's collapsed stacks
            result["setting"] = (
                f"{args.prompts} prompts x G={args.n}, {args.max_new_tokens} new tokens, micro-batch "
                f"{args.micro_batch}, {args.warmup} warm-up + {args.steps} steps, py-spy {args.rate} Hz"
            )
    path = out_dir / "profile.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"profile": str(path), **{k: result.get(k) for k in ("slowest_phase", "error")}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
