"""Progress of a training run: a rich bar on a terminal, plain lines in a log.

A bar redrawn in place is unreadable in a file or a CI log (and rich draws nothing there
until the end), so when stdout is not a terminal the run prints one line every few steps
instead: step, reward, held-out accuracy when it was evaluated, seconds per step.
"""

from __future__ import annotations

import sys
from typing import Any, Protocol, TextIO

# Plain lines per run (about): a 100-step run prints every 10 steps.
PLAIN_LINES = 10


class Progress(Protocol):
    def step(self, step: int, metrics: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class NoProgress:
    """``train.progress=false``, or a rank other than the main one."""

    def step(self, step: int, metrics: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


class PlainProgress:
    """One flushed line every ``every`` steps, on the last step, and on every evaluated step."""

    def __init__(self, total: int, *, every: int | None = None, out: TextIO | None = None) -> None:
        self.total = total
        self.every = every or max(1, total // PLAIN_LINES)
        self.out = out if out is not None else sys.stdout
        self._step_times: list[float] = []  # since the last line

    def step(self, step: int, metrics: dict[str, Any]) -> None:
        self._step_times.append(float(metrics.get("time_step_s", 0.0)))
        evaluated = "eval_accuracy" in metrics
        if step % self.every and step != self.total and not evaluated:
            return
        parts = [
            f"[train] step {step}/{self.total}",
            f"reward {metrics.get('reward_mean', float('nan')):.3f}",
        ]
        if evaluated:
            parts.append(f"held-out {metrics['eval_accuracy']:.3f}")
        parts.append(f"{sum(self._step_times) / len(self._step_times):.2f} s/step")
        print("  ".join(parts), file=self.out, flush=True)
        self._step_times.clear()

    def close(self) -> None:
        pass


class BarProgress:
    """The rich bar (a terminal)."""

    def __init__(self, total: int, completed: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress

        self._bar = RichProgress(
            TextColumn("[bold]GMPO"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(),
            transient=False,
        )
        self._bar.start()
        self._task = self._bar.add_task("train", total=total, completed=completed, info="")

    def step(self, step: int, metrics: dict[str, Any]) -> None:
        info = (
            f"reward {metrics['reward_mean']:.3f}  acc {metrics['accuracy']:.3f}  "
            f"len {metrics['response_length']:.0f}  {metrics['time_step_s']:.1f}s/step"
        )
        self._bar.update(self._task, completed=step, info=info)

    def close(self) -> None:
        self._bar.stop()


def make_progress(enabled: bool, total: int, completed: int, *, tty: bool | None = None) -> Progress:
    """The bar on a terminal, plain lines otherwise, nothing when disabled."""
    if not enabled:
        return NoProgress()
    if sys.stdout.isatty() if tty is None else tty:
        return BarProgress(total, completed)
    return PlainProgress(total)


def note(message: str, enabled: bool = True) -> None:
    """One plain, flushed line on stdout (a run's milestones: config written, evaluation done)."""
    if enabled:
        print(f"[train] {message}", flush=True)


def quiet_library_bars() -> None:
    """transformers' own bars ("Loading weights", "Writing model shards") redraw in place too:
    in a log they are noise between the run's lines, so they go when stderr is not a terminal."""
    if sys.stderr.isatty():
        return
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
