"""Where the shipped files are found (mm_gmpo.resources) and how user arguments reach them."""

from __future__ import annotations

from pathlib import Path

import pytest

from mm_gmpo import resources
from mm_gmpo.cli import main
from mm_gmpo.data.loaders import default_data_dir

REPO = Path(__file__).resolve().parents[2]


def test_the_package_sees_the_repository_folders() -> None:
    # In a checkout the package's data and configs are the repository's own files (one copy).
    assert resources.configs_dir() == (REPO / "configs").resolve()
    assert (resources.configs_dir() / "demo_text.yaml").samefile(REPO / "configs" / "demo_text.yaml")
    assert resources.data_dir() == (REPO / "data").resolve() == default_data_dir()


def test_env_var_wins_and_a_missing_package_copy_names_it(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("MM_GMPO_DATA_DIR", str(tmp_path))
    assert resources.data_dir() == tmp_path
    monkeypatch.delenv("MM_GMPO_DATA_DIR")
    monkeypatch.setattr(resources, "_shipped", lambda name: tmp_path / "gone" / name)
    with pytest.raises(FileNotFoundError, match="MM_GMPO_DATA_DIR"):
        resources.data_dir()


def test_config_arguments_find_shipped_configs_from_any_directory(monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    shipped = resources.configs_dir() / "demo_vl.yaml"
    assert resources.resolve_config("configs/demo_vl.yaml") == shipped
    assert resources.resolve_config("demo_vl.yaml") == resources.resolve_config("demo_vl") == shipped
    # A file that exists is always the one used, even where a shipped config has its name.
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "demo_vl.yaml").write_text("# a local copy\n")
    assert resources.resolve_config("configs/demo_vl.yaml") == Path("configs/demo_vl.yaml")
    # Anything else is left for the config loader to refuse.
    assert resources.resolve_config("elsewhere/demo_vl.yaml") == Path("elsewhere/demo_vl.yaml")
    assert resources.resolve_config("configs/nope.yaml") == Path("configs/nope.yaml")
    with pytest.raises(FileNotFoundError, match="known: .*demo_text.yaml"):
        resources.config_path("nope")


def test_train_dry_run_of_a_shipped_config_outside_the_checkout(monkeypatch, tmp_path, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["train", "configs/demo_text.yaml", "--dry-run"]) == 0
    assert "# dry run OK" in capsys.readouterr().out
    assert main(["train", "configs/nope.yaml", "--dry-run"]) == 2
    assert "nope.yaml does not exist" in capsys.readouterr().err
