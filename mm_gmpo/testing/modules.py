"""Load a script that is not in a package (test workers, bench rows) as a module.

Tests share helpers with the worker scripts that torchrun starts and with the bench
scripts; those files are run by path, not imported from a package, so tests load them the
same way to use one copy of their code.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType


def load_module_file(path: str | Path, name: str) -> ModuleType:
    """Execute the Python file at ``path`` as a fresh module called ``name``."""
    spec = importlib.util.spec_from_file_location(name, Path(path))
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path} as a module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
