"""Pieces every converter shares: the error type, progress bars and summary tables.

Converters build every record in memory before writing anything (the datasets are at most a
few hundred MB), so an error found in the last row still leaves no output behind.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mm_gmpo.data.images import ImageError, load_image_rgb
from mm_gmpo.data.records import ImageRef

T = TypeVar("T")

# Summaries and progress go to stderr so stdout stays clean for piping.
console = Console(stderr=True)


class DataFormatError(ValueError):
    """Input that does not match the expected layout; always names the file and the field."""

    def __init__(self, file: str | Path, field: str, problem: str) -> None:
        self.file = str(file)
        self.field = field
        super().__init__(f"{file}: field '{field}': {problem}")


def progress(items: Iterable[T], total: int | None, description: str) -> Iterator[T]:
    """Iterate with a rich progress bar (transient, on stderr)."""
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    # Off when stderr is not a terminal (CI logs): a redrawn bar there is only noise.
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)


def check_image(ref: ImageRef, file: str | Path, field: str) -> None:
    """Converters' decodability check: corrupt, empty or missing images stop the conversion.

    Size policies (too small, too large) belong to the ``validate-images`` pass, so only the
    hard failures are tested here.
    """
    try:
        load_image_rgb(ref, min_side=1, max_image_pixels=None, max_aspect=None)
    except ImageError as e:
        raise DataFormatError(file, field, f"image {e.reason}: {e.detail}") from e


def print_table(title: str, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """A small summary table on stderr."""
    table = Table(title=title, title_justify="left")
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*(str(c) for c in row))
    console.print(table)
