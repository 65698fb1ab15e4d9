"""model.path is checked before anything loads: a local model directory, or a hub id that the
cache or the hub can serve; every failure is one line naming the field, in seconds."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub
import pytest

from mm_gmpo.hub import SourceError, check_model_dir

OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A hub cache holding one model, ``org/cached`` (the layout huggingface_hub writes)."""
    for name in OFFLINE_VARS:
        monkeypatch.delenv(name, raising=False)
    repo = tmp_path / "hub" / "models--org--cached"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "config.json").write_text("{}")
    return tmp_path / "hub"


def _hub_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(huggingface_hub.HfApi, "repo_info", refuse)


def test_local_directory_needs_a_config(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"model.path: no such model directory: .*/nope"):
        check_model_dir(str(tmp_path / "nope"))
    run = tmp_path / "run" / "checkpoints" / "step_00000002"
    (run / "model").mkdir(parents=True)
    (run / "model" / "config.json").write_text("{}")
    with pytest.raises(
        SourceError, match=r"without config.json.*a training checkpoint\? use .*step_00000002/model"
    ):
        check_model_dir(str(run))
    assert check_model_dir(str(run / "model")) == run / "model"


@pytest.mark.parametrize("flag", ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"])
def test_offline_hub_id_comes_from_the_cache_or_fails(cache, monkeypatch, flag) -> None:
    monkeypatch.setenv(flag, "1")
    _hub_unreachable(monkeypatch)  # never asked when offline: this would make it fail otherwise
    assert check_model_dir("org/cached", cache_dir=cache) == "org/cached"
    with pytest.raises(
        SourceError, match=f"'org/missing' is a hub id, {flag} is set and it is not in the local"
    ):
        check_model_dir("org/missing", cache_dir=cache)


def test_unreachable_hub_uses_the_cache_or_fails(cache, monkeypatch) -> None:
    _hub_unreachable(monkeypatch)
    # Cached: the snapshot folder itself, so loading never touches the network.
    assert check_model_dir("org/cached", cache_dir=cache) == cache / "models--org--cached/snapshots/abc123"
    with pytest.raises(SourceError, match="'org/missing' is no local directory.*hub is unreachable"):
        check_model_dir("org/missing", cache_dir=cache)


def test_hub_answers_decide(cache, monkeypatch) -> None:
    from types import SimpleNamespace

    from huggingface_hub.errors import RepositoryNotFoundError

    seen = []
    not_found = SimpleNamespace(headers={}, request=None, status_code=404)

    def repo_info(self, repo_id, **kwargs):
        seen.append((repo_id, kwargs["timeout"]))
        if repo_id == "org/missing":
            raise RepositoryNotFoundError("404", response=not_found)

    monkeypatch.setattr(huggingface_hub.HfApi, "repo_info", repo_info)
    assert check_model_dir("org/present", cache_dir=cache) == "org/present"
    with pytest.raises(SourceError, match="the hub has no such repository"):
        check_model_dir("org/missing", cache_dir=cache)
    assert all(timeout <= 10 for _, timeout in seen)  # a bounded question, never a minute of retries
