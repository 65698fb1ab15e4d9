"""Where a model or data set comes from: a local path or a Hugging Face hub id, checked in seconds.

``from_pretrained`` on an unreachable hub id retries for about a minute and ends in a traceback;
a missing local directory that happens to contain one ``/`` is taken for a hub id and ends in
"Repo id must be in the form 'repo_name'". A run asks here first, before anything is loaded:

* a local directory must hold a ``config.json`` (the hint names ``model/`` when it is a training
  checkpoint);
* a hub id is taken from the local cache when it is there and the hub is off (``HF_HUB_OFFLINE``,
  ``TRANSFORMERS_OFFLINE``, ``HF_DATASETS_OFFLINE`` for data sets) or unreachable; otherwise the
  hub is asked once, with a short time-out, whether the repository exists.

Every failure is a :class:`SourceError` whose one-line message names the config field.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

log = logging.getLogger("mm_gmpo")

# owner/name, the only form a hub repository id takes (a path has more parts or starts with . / ~).
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
PROBE_TIMEOUT_S = 10.0
_TRUE = {"1", "on", "yes", "true"}
_OFFLINE_VARS = {
    "model": ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"),
    "dataset": ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"),
}


class SourceError(OSError):
    """A model or data source that cannot be used; the message names the config field."""


def looks_like_hub_id(spec: str) -> bool:
    return bool(_HUB_ID.match(spec))


def offline_flag(repo_type: str = "model") -> str | None:
    """The environment variable that puts the hub off for ``repo_type``, if one is set."""
    for name in _OFFLINE_VARS[repo_type]:
        if os.environ.get(name, "").strip().lower() in _TRUE:
            return name
    return None


def cached_snapshot(
    repo_id: str, repo_type: str = "model", cache_dir: str | Path | None = None
) -> Path | None:
    """The local snapshot folder of ``repo_id`` in the hub cache, or None (no network)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(
            snapshot_download(repo_id, repo_type=repo_type, cache_dir=cache_dir, local_files_only=True)
        )
    except (LocalEntryNotFoundError, FileNotFoundError, ValueError):
        return None


def _probe(repo_id: str, repo_type: str) -> str | None:
    """None when the hub has ``repo_id``; else why it cannot be had (one phrase)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        HfApi().repo_info(repo_id, repo_type=repo_type, timeout=PROBE_TIMEOUT_S)
    except GatedRepoError:
        return "it is gated on the hub (accept its licence there and set HF_TOKEN)"
    except RepositoryNotFoundError:
        return "the hub has no such repository (or it is private: set HF_TOKEN)"
    except Exception as exc:  # connection refused, DNS, time-out, proxy: all mean "unreachable"
        return f"the Hugging Face hub is unreachable ({type(exc).__name__}: {str(exc)[:120]})"
    return None


def check_hub_id(
    repo_id: str, field: str, repo_type: str = "model", cache_dir: str | Path | None = None
) -> str | Path:
    """``repo_id`` when the hub serves it, its cached snapshot when the hub is off or unreachable.

    Raises :class:`SourceError` when neither the cache nor the hub has it.
    """
    cached = cached_snapshot(repo_id, repo_type, cache_dir)
    flag = offline_flag(repo_type)
    if flag is not None:
        if cached is None:
            raise SourceError(
                f"{field}: {repo_id!r} is a hub id, {flag} is set and it is not in the local "
                f"Hugging Face cache; download it first or give a local directory"
            )
        return repo_id
    problem = _probe(repo_id, repo_type)
    if problem is None:
        return repo_id
    if cached is not None and "unreachable" in problem:
        log.warning("%s: %s; using the cached copy %s", field, problem, cached)
        return cached
    raise SourceError(
        f"{field}: {repo_id!r} is no local directory, and as a hub id it cannot be used: {problem}; "
        "download it where the hub is reachable or give a local directory"
    )


def check_dataset_id(repo_id: str, field: str) -> None:
    """Fail in seconds when the hub cannot serve data set ``repo_id``.

    With the hub off (``HF_DATASETS_OFFLINE``/``HF_HUB_OFFLINE``) ``datasets`` reads its own
    cache, so nothing is asked here.
    """
    if offline_flag("dataset") is not None:
        return
    problem = _probe(repo_id, "dataset")
    if problem is not None:
        hint = " (HF_DATASETS_OFFLINE=1 reads a cached copy)" if "unreachable" in problem else ""
        raise SourceError(
            f"{field}: no such data file, and as a hub data set it cannot be used: {problem}{hint}"
        )


def check_model_dir(spec: str, field: str = "model.path", cache_dir: str | Path | None = None) -> str | Path:
    """A local model directory (with ``config.json``) or a usable hub id; see the module doc."""
    path = Path(spec).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return path
        inner = path / "model"
        hint = f" (a training checkpoint? use {inner})" if (inner / "config.json").is_file() else ""
        raise SourceError(f"{field}: {spec} is a directory without config.json, not a saved model{hint}")
    if path.exists():
        raise SourceError(f"{field}: {spec} is a file; give a model directory or a hub id")
    if not looks_like_hub_id(spec):
        raise SourceError(f"{field}: no such model directory: {spec}")
    return check_hub_id(spec, field, "model", cache_dir)
