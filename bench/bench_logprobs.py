"""Row 7: the update's response log-probs at the paper's shapes, peak extra memory and time.

    MM_GMPO_BENCH_THREADS=2 python bench/bench_logprobs.py   # vocab 151,936, prompt 1024 + response 3000, batch 2
    python bench/bench_logprobs.py --prompt 16 --response 40 --vocab 5000 --repeats 1   # smoke size

One forward + backward of the response log-probs (and the no-grad entropy, as the update takes
them) through ``TextPolicyPath.forward`` on a tiny Qwen2 carrying the real vocabulary (hidden
128, 2 layers, tied embeddings, built locally), three ways, each in its own fresh process:

* ``reference``: today's full-vocabulary path (``train.logit_chunk=0``): [B, R, V] logits, a
  float32 log-softmax, its ``exp()`` for the entropy;
* ``chunked``: the new path (``train.logit_chunk``, default 256): LM head + log-prob + entropy
  per chunk of positions from the final hidden states, recomputed in backward;
* ``trl``: TRL's method, written here (TRL is not imported): full logits / T, then per row a
  ``logsumexp`` and a gather of the sampled token (``selective_log_softmax``), the entropy per
  row under no-grad.

Peak extra memory: the process's peak RSS (``ru_maxrss``) minus its RSS after the model and the
batch were built, so the model and Python are not counted. Time: median over ``--rounds``
fresh processes per variant, run alternately so that load from other jobs on a shared machine
falls on every variant, of ``--repeats`` forward + backward calls each (the first call of a
process is timed: at these sizes a warm-up would double the run). The three variants' log-probs and two gradients are checked equal before the row is
written. The reference needs about 16 bytes per element of [B, R, V] (15 GB at batch 2): the
bench waits for that much available memory before starting it, and records it as not measured
if the wait runs out.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import DEFAULT_OUT, REPO, Row, write_row  # noqa: E402

VARIANTS = ("reference", "chunked", "trl")
PAPER_VOCAB = 151_936


# ---------------------------------------------------------------- worker (one variant per process)
def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _trl_logp_and_entropy(model, batch, temperature: float):
    """TRL's way: full logits / T, per-row logsumexp + gather, entropy per row without grad."""
    import torch

    width_r = batch.response_ids.shape[1]
    logits = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        logits_to_keep=width_r + 1,
        use_cache=False,
    ).logits[:, :-1]  # [B, R, V]
    logits = logits / temperature
    picked = logits.gather(-1, batch.response_ids.unsqueeze(-1)).squeeze(-1)  # [B, R]
    lse = torch.stack([torch.logsumexp(row, dim=-1) for row in logits])  # [B, R], one row at a time
    logp = picked - lse  # [B, R]
    with torch.no_grad():
        entropy = []
        for row in logits:  # [R, V]
            row_logp = torch.log_softmax(row, dim=-1)
            entropy.append(-(row_logp.exp() * row_logp).sum(-1))
    return logp, torch.stack(entropy)


def worker(args: argparse.Namespace) -> int:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mm_gmpo.text.path import TextPolicyPath
    from mm_gmpo.train.collate import collate_prompt_response

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    tok = AutoTokenizer.from_pretrained(args.model_dir)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32)
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, vocab, (args.prompt,), generator=gen).tolist() for _ in range(args.batch)]
    # --ragged: the last row 3/4 as long (the chunked path skips its padding; the others do not)
    short = max(1, 3 * args.response // 4) if args.ragged else args.response
    lengths = [args.response] * (args.batch - 1) + [short]
    responses = [torch.randint(0, vocab, (n,), generator=gen).tolist() for n in lengths]
    batch = collate_prompt_response(prompts, responses, tok.pad_token_id)
    chunk = args.chunk if args.variant == "chunked" else 0
    path = TextPolicyPath(tok, "none", args.prompt, logit_chunk=chunk)
    base_mb = _rss_mb()
    times, cpu_times = [], []
    for _ in range(args.repeats):
        model.zero_grad(set_to_none=True)
        t0, c0 = time.perf_counter(), time.process_time()
        if args.variant == "trl":
            logp, entropy = _trl_logp_and_entropy(model, batch, args.temperature)
        else:
            logp, entropy = path.forward(model, batch, args.temperature)
        loss = (logp * batch.response_mask).sum() / batch.response_mask.sum()
        loss.backward()
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
        del logp, loss
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    params = dict(model.named_parameters())
    with torch.no_grad():
        check_logp = (
            _trl_logp_and_entropy(model, batch, args.temperature)[0]
            if args.variant == "trl"
            else path.forward(model, batch, args.temperature, with_entropy=False)[0]
        )
    torch.save(
        {
            "logp": check_logp * batch.response_mask,  # [B, R]
            "entropy": entropy * batch.response_mask,  # [B, R]
            "grad_norm": params["model.norm.weight"].grad.clone(),  # [H]
            "grad_embed_rows": params["model.embed_tokens.weight"].grad[:64].clone(),  # [64, H]
        },
        args.check_file,
    )
    print(
        json.dumps(
            {
                "variant": args.variant,
                "times_s": times,
                "cpu_times_s": cpu_times,
                "base_rss_mb": base_mb,
                "peak_rss_mb": peak_mb,
                "peak_extra_mb": peak_mb - base_mb,
                "vocab": vocab,
            }
        ),
        flush=True,
    )
    return 0


# ---------------------------------------------------------------- driver
def available_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable"):
            return int(line.split()[1]) / 2**20
    return float("inf")


def wait_for_memory(need_gb: float, wait_s: float) -> bool:
    """Poll MemAvailable until ``need_gb`` is free (the machine is shared) or ``wait_s`` runs out."""
    deadline = time.time() + wait_s
    while True:
        free = available_gb()
        if free >= need_gb:
            return True
        if time.time() > deadline:
            return False
        print(f"[bench] waiting: {free:.1f} GB available, need {need_gb:.1f} GB", file=sys.stderr, flush=True)
        time.sleep(30)


def run_variant(args: argparse.Namespace, variant: str, model_dir: Path, check_file: Path) -> dict:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        variant,
        "--model-dir",
        str(model_dir),
        "--check-file",
        str(check_file),
        "--prompt",
        str(args.prompt),
        "--response",
        str(args.response),
        "--batch",
        str(args.batch),
        "--chunk",
        str(args.chunk),
        "--temperature",
        str(args.temperature),
        "--repeats",
        str(args.repeats),
        *(["--ragged"] if args.ragged else []),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"variant": variant, "error": proc.stderr.strip()[-1500:], "returncode": proc.returncode}
    for line in reversed(proc.stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {"variant": variant, "error": "no result line", "returncode": proc.returncode}


def merge_rounds(before: dict | None, got: dict) -> dict:
    """Pool the timed calls of every round; the peak is the largest of the rounds'."""
    if before is None or "error" in got:
        return got
    out = dict(before)
    for key in ("times_s", "cpu_times_s"):
        out[key] = before[key] + got[key]
    for key in ("peak_extra_mb", "peak_rss_mb", "base_rss_mb"):
        out[key] = max(before[key], got[key])
    return out


def compare(files: dict[str, Path]) -> dict[str, float]:
    """Largest |difference| of log-probs, entropy and two gradients against the reference."""
    import torch

    loaded = {v: torch.load(f) for v, f in files.items() if f.exists()}
    if "reference" not in loaded:
        return {}
    ref = loaded["reference"]
    out = {}
    for variant, data in loaded.items():
        if variant == "reference":
            continue
        for key in ("logp", "entropy", "grad_norm", "grad_embed_rows"):
            scale = float(ref[key].abs().max()) or 1.0
            out[f"{variant}_{key}_max_abs_diff"] = float((data[key] - ref[key]).abs().max())
            out[f"{variant}_{key}_max_rel_diff"] = out[f"{variant}_{key}_max_abs_diff"] / scale
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--prompt", type=int, default=1024)
    ap.add_argument("--response", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=PAPER_VOCAB)
    ap.add_argument("--chunk", type=int, default=256, help="train.logit_chunk of the chunked variant")
    ap.add_argument("--temperature", type=float, default=1.0, help="the paper recipe's 1.0")
    ap.add_argument("--repeats", type=int, default=1, help="timed calls per process")
    ap.add_argument("--rounds", type=int, default=2, help="fresh processes per variant, alternated")
    ap.add_argument("--ragged", action="store_true", help="last row 3/4 as long (padding)")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--wait-memory-s", type=float, default=1800.0, help="how long to wait for free RAM")
    ap.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", help=argparse.SUPPRESS)
    ap.add_argument("--check-file", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        args.variant = args.worker
        return worker(args)

    from mm_gmpo.testing import build_tiny_qwen2

    threads = os.environ.get("OMP_NUM_THREADS", "1")
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_qwen2(Path(tmp) / "model", seed=0, vocab_size=args.vocab)
        files = {v: Path(tmp) / f"{v}.pt" for v in args.variants}
        # Elements of [B, R, V]; the reference and TRL hold ~16 and ~12 bytes of each at once.
        elements = args.batch * args.response * args.vocab
        # Rounds alternate the variants, so load from other jobs on the shared machine falls on all.
        for round_no in range(args.rounds):
            for variant in args.variants:
                if results.get(variant, {}).get("error"):
                    continue
                need_gb = (16 if variant != "chunked" else 2) * elements / 2**30 + 2.0
                if not wait_for_memory(need_gb, args.wait_memory_s):
                    results[variant] = {
                        "variant": variant,
                        "error": f"{need_gb:.0f} GB of RAM never came free",
                    }
                    continue
                free = available_gb()
                print(
                    f"[bench] round {round_no}: {variant} ({free:.1f} GB available)",
                    file=sys.stderr,
                    flush=True,
                )
                got = run_variant(args, variant, model_dir, files[variant])
                print(f"[bench] {variant}: {json.dumps(got)[:400]}", file=sys.stderr, flush=True)
                results[variant] = merge_rounds(results.get(variant), got)
        parity = compare(files)

    def med(v: str) -> float | None:
        r = results.get(v, {})
        return statistics.median(r["times_s"]) if r.get("times_s") else None

    def mem(v: str) -> float | None:
        return results.get(v, {}).get("peak_extra_mb")

    ok = mem("reference") is not None and mem("chunked") is not None
    mem_ratio = mem("chunked") / mem("reference") if ok else None
    time_ratio = med("chunked") / med("reference") if ok else None
    row = Row(
        row=7,
        name="Paper shapes: update log-probs, forward + backward",
        figure=(
            f"MB of peak extra RSS and s per forward + backward of the response log-probs and entropy, "
            f"[B, P + R, V] = [{args.batch}, {args.prompt} + {args.response}, {args.vocab:,}]"
        ),
        value=mem("chunked"),
        baseline_name="today's full-vocabulary path (train.logit_chunk=0), same run",
        baseline_value=mem("reference"),
        ratio=mem_ratio,
        ratio_note=(
            "chunked peak extra memory / reference peak extra memory (lower is better); the time ratio "
            f"is {time_ratio:.3g}" + (f" ({med('chunked'):.3g} s vs {med('reference'):.3g} s)" if ok else "")
            if time_ratio is not None
            else "not measured"
        ),
        target="<= 1/8 of the reference's memory at <= 1.2x its time",
        met=(mem_ratio <= 1 / 8 and time_ratio <= 1.2) if ok else None,
        status="measured" if ok else "not measured",
        conditions=(
            f"tiny Qwen2 (hidden 128, 2 layers, tied embeddings, fp32, built locally) with vocabulary "
            f"{args.vocab:,}; prompt {args.prompt}, response {args.response} tokens"
            + (f" (last row {3 * args.response // 4}: ragged)" if args.ragged else " (every row)")
            + f", batch {args.batch}, temperature {args.temperature}; chunk {args.chunk}; "
            f"each variant in its own process, OMP_NUM_THREADS={threads}; {args.rounds} round(s) alternating "
            f"the variants, {args.repeats} call(s) per process; time: median of the calls; peak extra = ru_maxrss minus RSS after model and batch were built"
        ),
        details={
            "variants": results,
            "time_ratio": time_ratio,
            "memory_ratio": mem_ratio,
            "trl_memory_ratio": (mem("trl") / mem("reference")) if mem("trl") and mem("reference") else None,
            "trl_time_ratio": (med("trl") / med("reference")) if med("trl") and med("reference") else None,
            "median_s": {v: med(v) for v in args.variants},
            "peak_extra_mb": {v: mem(v) for v in args.variants},
            "parity_vs_reference": parity,
            "omp_num_threads": threads,
        },
    )
    path = write_row(row, args.out)
    print(json.dumps({"row": 7, "memory_ratio": mem_ratio, "time_ratio": time_ratio, "file": str(path)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
