"""The batch scorer: hard time limit by killing, memory limit, crash recovery, reuse, cleanup."""

from __future__ import annotations

import os
import time

import pytest

from mm_gmpo.data.records import Record
from mm_gmpo.rewards import HardLimitPool, RewardScorer, RewardWeights


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); check /proc when available
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return True


def test_scores_records_and_dicts(math_scorer):
    recs = [Record(id="1", problem="p", answer="204"), {"answer": ["9.6\n", "9.60"]}, {"answer": 142.0}]
    res = math_scorer.score([r"\boxed{204}", r"\boxed{9.6}", r"\boxed{141}"], recs)
    assert res.accuracy == [1.0, 1.0, 0.0]
    assert res.rewards == [1.0, 1.0, 0.0]
    assert not any(res.errored)
    res = math_scorer.score([r"\boxed{204}"], [{"answer": "204"}], truncated=[True])
    assert res.rewards == [0.0]


def test_geometry_kind_combines_accuracy_and_format(geometry_scorer):
    recs = [{"answer": "B", "choices": ["4", r"2\sqrt{3}", "6", "8"]}] * 3
    res = geometry_scorer.score(
        [r"<think>x</think> \boxed{3.46}", r"\boxed{B}", r"<think>x</think> \boxed{6}"],
        recs,
    )
    assert res.accuracy == [1.0, 1.0, 0.0]
    assert res.format == [1.0, 0.0, 1.0]
    assert res.rewards == pytest.approx([1.0, 0.9, 0.1])


def test_custom_weights():
    with RewardScorer("geometry", num_workers=1, weights=RewardWeights(accuracy=0.5, format=0.5)) as s:
        res = s.score([r"<think>x</think> \boxed{5}"], [{"answer": "5"}])
    assert res.rewards == pytest.approx([1.0])
    assert s.weights.format == 0.5


def test_hard_limit_kills_a_worker_that_ignores_signals():
    pool = HardLimitPool(num_workers=1, timeout_s=2.0)
    try:
        pool.start()
        (spinner,) = pool.worker_pids()
        # item 0 blocks SIGALRM and spins for 300 s: only a kill can stop it; items 1 and 2
        # (no work) run on the replacement worker
        out = pool.run("_debug_spin_blocked", [("300",), ("0",), ("0",)])
        assert [s for s, _, _ in out] == ["timeout", "ok", "ok"]
        assert out[0][1:] == (0.0, 0.0)
        # killed, not waited for: the spinning process is gone as soon as run returns
        assert not _alive(spinner)
        assert spinner not in pool.worker_pids() and pool.stats.restarts == 1
        # the pool still works afterwards
        assert [s for s, _, _ in pool.run("_debug_spin", [("0",)] * 4)] == ["ok"] * 4
    finally:
        pool.close()


def test_soft_timer_ends_slow_python_without_restart():
    pool = HardLimitPool(num_workers=1, timeout_s=1.0)
    try:
        pool.start()
        pids = pool.worker_pids()
        out = pool.run("_debug_spin", [("30",)])
        assert out == [("timeout", 0.0, 0.0)]
        assert pool.worker_pids() == pids  # interrupted in place, no kill
    finally:
        pool.close()


def test_memory_limit_and_crash_are_errors_and_recovered():
    pool = HardLimitPool(num_workers=1, timeout_s=5.0, memory_limit_mb=1024)
    try:
        out = pool.run("_debug_alloc", [("4096",), ("1",)])
        assert out[0] == ("error", 0.0, 0.0)
        assert out[1] == ("ok", 1.0, 0.0)
        out = pool.run("_debug_exit", [("",)])
        assert out == [("error", 0.0, 0.0)]
        assert pool.run("_debug_alloc", [("1",)]) == [("ok", 1.0, 0.0)]
    finally:
        pool.close()


def test_workers_are_reused_across_calls_and_cleaned_up():
    pool = HardLimitPool(num_workers=2, timeout_s=5.0)
    first = {int(a) for _, a, _ in pool.run("_debug_pid", [("",)] * 20)}
    second = {int(a) for _, a, _ in pool.run("_debug_pid", [("",)] * 20)}
    assert first <= set(pool.worker_pids()) and second <= set(pool.worker_pids())
    assert os.getpid() not in first  # the work really happens in other processes
    pool.close()
    deadline = time.monotonic() + 5
    while any(_alive(p) for p in first) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in first)


ADVERSARIAL = [
    r"\boxed{9^{9^{9^{9}}}}",
    r"\boxed{10^{10^{10}}!}",
    r"\boxed{" + "{" * 2000 + "1" + "}" * 2000 + "}",
    "x" * 200_000 + r"\boxed{1}" + "y" * 1000,
    r"\boxed{\frac{1}{}}\left( \sqrt[}{2} \end{pmatrix} \boxed{\frac{",
    "\x00\x00\\boxed{1\x00}\x00",
    "\\boxed{\u202e٣ⅷ🙂\ufeff𝟙}",
    r"\boxed{2^{99999999}}",
    r"\boxed{\binom{10000000}{5000000}}",
]


def test_adversarial_inputs_score_zero(math_scorer):
    recs = [{"answer": "2"}] * len(ADVERSARIAL)
    res = math_scorer.score(ADVERSARIAL, recs)
    print(f"adversarial: {len(ADVERSARIAL)} items in {res.seconds:.2f}s, timeouts={res.num_timeouts}")
    # every item returns (scored, timed out or errored), and none earns a reward; how long
    # the batch takes is bench/bench_rewards.py's business
    assert res.rewards == [0.0] * len(ADVERSARIAL)
    # and the scorer still grades normal answers afterwards
    assert math_scorer.score([r"\boxed{2}"], [{"answer": "2"}]).rewards == [1.0]


def test_adversarial_geometry(geometry_scorer):
    recs = [{"answer": "B", "choices": ["1", "2"]}] * len(ADVERSARIAL)
    res = geometry_scorer.score(ADVERSARIAL, recs)
    assert res.accuracy == [0.0] * len(ADVERSARIAL)


def test_bad_arguments():
    with pytest.raises(ValueError):
        RewardScorer("nope")
    with RewardScorer("math", num_workers=1) as s:
        with pytest.raises(ValueError):
            s.score(["a"], [])
        with pytest.raises(ValueError):
            s.score(["a"], [{"answer": None}])


def test_interpreter_exit_without_close_leaves_nothing_behind(tmp_path):
    """A script without a __main__ guard that never closes its scorer exits and
    its workers are gone (the forkserver launch does not re-run the script in workers)."""
    import subprocess
    import sys

    script = tmp_path / "unguarded.py"
    script.write_text(
        "from mm_gmpo.rewards import RewardScorer\n"
        "s = RewardScorer('math', num_workers=2)\n"
        "r = s.score(['\\\\boxed{1}'], [{'answer': '1'}])\n"
        "print(*s.pool.worker_pids(), int(r.rewards[0]))\n"
    )
    # the limit is a hang guard with room for a loaded machine, not a speed target
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    *pids, reward = (int(x) for x in out.stdout.split())
    assert reward == 1 and len(pids) == 2
    deadline = time.monotonic() + 5
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in pids)
