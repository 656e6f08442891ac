"""Trainer adapters: what the supervisor knows about each training program.

Every module of this package that defines `ADAPTER` is registered under its name. A
module is named after its adapter, `-` written `_` (`f5-tts` lives in `f5_tts.py`), so
`get` imports only the adapter asked for; `names` and `recognising` import them all.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from trainer_adapters.base import AdapterOptions, TrainerAdapter

__all__ = ["AdapterOptions", "TrainerAdapter", "detect", "get", "names"]

_REGISTRY: dict[str, TrainerAdapter] = {}  # the adapters imported so far, by name
_all_found = False


def _module_names() -> list[str]:
    return [module.name for module in pkgutil.iter_modules(__path__)]


def _load(module_name: str) -> TrainerAdapter | None:
    """The adapter the module defines; None for a module without one."""
    adapter = getattr(importlib.import_module(f"{__name__}.{module_name}"), "ADAPTER", None)
    if not isinstance(adapter, TrainerAdapter):
        return None
    if adapter.name.replace("-", "_") != module_name:
        raise RuntimeError(
            f"the adapter {adapter.name!r} must live in {adapter.name.replace('-', '_')}.py, "
            f"not {module_name}.py (get() finds an adapter by its module's name)"
        )
    return adapter


def _all() -> dict[str, TrainerAdapter]:
    """Every adapter, in the order of their modules' names."""
    global _all_found
    if not _all_found:
        found = {}
        for module_name in _module_names():
            adapter = _load(module_name)
            if adapter is not None:
                found[adapter.name] = adapter
        _REGISTRY.clear()
        _REGISTRY.update(found)
        _all_found = True
    return _REGISTRY


def names() -> list[str]:
    return sorted(_all())


def get(name: str) -> TrainerAdapter:
    """The adapter called `name`; KeyError (with the known names) if there is none."""
    if name not in _REGISTRY and not _all_found and name.replace("-", "_") in _module_names():
        adapter = _load(name.replace("-", "_"))
        if adapter is not None and adapter.name == name:
            _REGISTRY[name] = adapter
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown adapter {name!r}; known: {', '.join(names())}") from None


def recognising(path: Path) -> list[TrainerAdapter]:
    """The adapters whose trainer writes files like `path` (by name and directory)."""
    return [a for a in _all().values() if a.recognise is not None and a.recognise(path)]


def detect(path: Path) -> TrainerAdapter | None:
    """The adapter whose trainer writes files like `path`, if exactly one recognises it.
    `generic` matches anything and so recognises nothing."""
    found = recognising(path)
    return found[0] if len(found) == 1 else None
