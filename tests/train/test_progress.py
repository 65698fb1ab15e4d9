"""Progress in a log: plain lines every few steps (not a terminal), the rich bar on one."""

from __future__ import annotations

import io

from mm_gmpo.train.progress import BarProgress, NoProgress, PlainProgress, make_progress


def _metrics(reward: float, seconds: float, **extra: float) -> dict[str, float]:
    return {
        "reward_mean": reward,
        "accuracy": reward,
        "response_length": 4.0,
        "time_step_s": seconds,
        **extra,
    }


def test_plain_lines_every_few_steps_with_held_out_when_evaluated() -> None:
    out = io.StringIO()
    progress = PlainProgress(10, every=4, out=out)
    for step in range(1, 11):
        extra = {"eval_accuracy": 0.625} if step == 6 else {}
        progress.step(step, _metrics(step / 10, float(step), **extra))
    lines = out.getvalue().splitlines()
    # steps 4 and 8 (every 4), 6 (evaluated) and 10 (the last), nothing else
    assert [line.split()[2] for line in lines] == ["4/10", "6/10", "8/10", "10/10"]
    assert "reward 0.400" in lines[0] and "held-out" not in lines[0]
    assert "held-out 0.625" in lines[1]
    # seconds per step: the mean over the steps since the previous line
    assert lines[0].endswith("2.50 s/step")  # steps 1-4
    assert lines[1].endswith("5.50 s/step")  # steps 5-6
    assert lines[3].endswith("9.50 s/step")  # steps 9-10


def test_a_run_prints_about_ten_lines() -> None:
    out = io.StringIO()
    progress = PlainProgress(100, out=out)
    for step in range(1, 101):
        progress.step(step, _metrics(0.5, 1.0))
    assert len(out.getvalue().splitlines()) == 10


def test_the_bar_on_a_terminal_lines_in_a_log_nothing_when_off() -> None:
    assert isinstance(make_progress(True, 10, 0, tty=False), PlainProgress)
    bar = make_progress(True, 10, 0, tty=True)
    try:
        assert isinstance(bar, BarProgress)
    finally:
        bar.close()
    assert isinstance(make_progress(False, 10, 0, tty=True), NoProgress)
