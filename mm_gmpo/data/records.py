"""The one record format every dataset is turned into.

Converters in ``data_prep/`` write records; the training loop, the rewards and ``eval/`` read
them. Keeping one shape means a verifier never has to guess which dataset a row came from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# An image is either raw encoded bytes (PNG/JPEG...) or a filesystem path.
ImageRef = bytes | str


class BadRecordError(ValueError):
    """A row or record the pipeline cannot use; the message names the file/record and the field.

    ``reason`` is a short key for tallies of skipped records (``empty_problem``,
    ``prompt_too_long``, ``image:empty``, ...), so a run that skips can say how many and why.
    """

    def __init__(self, message: str, reason: str = "record") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class Record:
    """One problem.

    ``answer`` is a string, or a list of strings when any of several forms is correct
    (minerva_math, olympiadbench). ``choices`` is set for multiple-choice problems; the answer
    may then be a letter ("B") or the value of the right choice. ``problem`` may contain
    ``<image>`` placeholders, one per entry of ``images``.
    """

    id: str
    problem: str
    answer: str | list[str]
    choices: list[str] | None = None
    images: list[ImageRef] = field(default_factory=list)
    source: str = ""
    split: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> Record:
        known = {f for f in cls.__dataclass_fields__}
        extra = {k: v for k, v in row.items() if k not in known}
        kwargs = {k: v for k, v in row.items() if k in known}
        meta = dict(kwargs.pop("metadata", None) or {})
        meta.update(extra)
        return cls(**kwargs, metadata=meta)
