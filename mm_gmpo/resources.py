"""Where the files that ship with mm-gmpo live: the data sets and the YAML configs.

One place answers "where is the data?" and "where are the configs?" for the whole project,
so the answer is the same in a clone, an editable install and a wheel installed anywhere:

* data: ``$MM_GMPO_DATA_DIR`` when set, else the repository's ``data/``;
* configs: the repository's ``configs/``.

Both folders are reached through the package (``importlib.resources``), not through the
checkout: ``mm_gmpo/_data`` and ``mm_gmpo/_configs`` are links to ``../data`` and
``../configs`` in the repository, and ``pyproject.toml`` lists them as package data, so a
built wheel carries the files themselves under those names. Users keep editing
``configs/*.yaml`` and ``data/`` at the top of the repository; the package sees the same files.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

DATA_ENV = "MM_GMPO_DATA_DIR"


def _shipped(name: str) -> Path:
    # A wheel installs plain files (pip never runs a package from a zip), so the resource
    # is a real folder; resolve() turns the checkout's link into the repository folder.
    return Path(str(resources.files("mm_gmpo").joinpath(name))).resolve()


def data_dir() -> Path:
    """The data folder: ``$MM_GMPO_DATA_DIR``, else the shipped ``data/``.

    Raises ``FileNotFoundError`` naming both when neither exists, e.g. an install made
    without the data (a wheel built from a tree that lacked ``data/``).
    """
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    path = _shipped("_data")
    if not path.is_dir():
        raise FileNotFoundError(
            f"no data folder: ${DATA_ENV} is not set and the package's data ({path}) is missing; "
            f"set {DATA_ENV} to a folder laid out like the repository's data/"
        )
    return path


def configs_dir() -> Path:
    """The shipped YAML configs (the repository's ``configs/``)."""
    path = _shipped("_configs")
    if not path.is_dir():
        raise FileNotFoundError(f"the package's configs ({path}) are missing: reinstall mm-gmpo")
    return path


def config_path(name: str) -> Path:
    """A shipped config by file name (``demo_text.yaml``; the ``.yaml`` may be left out)."""
    folder = configs_dir()
    for candidate in (name, f"{name}.yaml"):
        path = folder / candidate
        if path.is_file():
            return path
    known = ", ".join(sorted(p.name for p in folder.glob("*.yaml")))
    raise FileNotFoundError(f"no shipped config {name!r} in {folder} (known: {known})")


def resolve_config(arg: str | Path) -> Path:
    """A config argument as the user typed it: an existing file wins; otherwise ``NAME`` or
    ``configs/NAME`` names a shipped config, so the README's ``configs/demo_vl.yaml`` works
    from any directory and from an installed package. Anything else comes back unchanged
    (the config loader then reports the missing file)."""
    path = Path(arg)
    if path.is_file():
        return path
    if path.parent in (Path("."), Path("configs")):
        try:
            return config_path(path.name)
        except FileNotFoundError:
            pass
    return path
