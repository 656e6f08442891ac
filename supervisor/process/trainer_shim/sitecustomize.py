"""Put on the trainer's PYTHONPATH by train-supervisor when `[checkpoints]
trainer_safe_globals = true`: adds exactly the globals named in
TRAIN_SUPERVISOR_SAFE_GLOBALS (those its validator allowed in this trainer's
checkpoints, e.g. pathlib.PosixPath in a Lightning checkpoint) to torch's safe globals,
so an unmodified trainer whose torch.load is weights-only resumes from them. Nothing
wider: no other global, and weights-only loading stays on.

Standard library only, and torch is not imported here: the globals are added right after
`torch.serialization` is first imported, by whoever imports it. Any sitecustomize this
one shadows on sys.path still runs.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from types import ModuleType
from typing import Any

VARIABLE = "TRAIN_SUPERVISOR_SAFE_GLOBALS"
PATHLIB_MODULES = ("pathlib", "pathlib._local")  # Python 3.13 pickles path classes as pathlib._local.*


def _resolve(dotted: str) -> Any:
    module, _, attribute = dotted.rpartition(".")
    obj: Any = importlib.import_module(module)
    for part in attribute.split("."):
        obj = getattr(obj, part)
    return obj


def _allow(serialization: ModuleType) -> None:
    add = getattr(serialization, "add_safe_globals", None)
    if add is None:
        return  # a torch before 2.4: nothing is weights-only by default there
    allowed: list[Any] = []
    for dotted in filter(None, os.environ.get(VARIABLE, "").split(",")):
        try:
            obj = _resolve(dotted)
        except (ImportError, AttributeError):
            continue
        if getattr(obj, "__module__", None) in PATHLIB_MODULES:
            allowed += [(obj, f"{module}.{obj.__qualname__}") for module in PATHLIB_MODULES]
        else:
            allowed.append(obj)
    add(allowed)


class _ThenAllow(importlib.abc.Loader):
    def __init__(self, inner: importlib.abc.Loader) -> None:
        self.inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.inner.exec_module(module)
        _allow(module)


class _WatchSerialization(importlib.abc.MetaPathFinder):
    def find_spec(
        self, name: str, path: Any = None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        if name != "torch.serialization":
            return None
        sys.meta_path.remove(self)  # once
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _ThenAllow(spec.loader)
        return spec


def _run_shadowed() -> None:
    """The sitecustomize this one hides (a distribution's, a virtualenv's), if any."""
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [entry for entry in sys.path if os.path.abspath(entry or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


if os.environ.get(VARIABLE):
    if "torch.serialization" in sys.modules:
        _allow(sys.modules["torch.serialization"])
    else:
        sys.meta_path.insert(0, _WatchSerialization())
_run_shadowed()
