"""Trainer adapters: what the supervisor knows about each training program.

Every module of this package that defines `ADAPTER` is registered under its name.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from trainer_adapters.base import AdapterOptions, TrainerAdapter

__all__ = ["AdapterOptions", "TrainerAdapter", "detect", "get", "names"]


def _discover() -> dict[str, TrainerAdapter]:
    found: dict[str, TrainerAdapter] = {}
    for module in pkgutil.iter_modules(__path__):
        adapter = getattr(importlib.import_module(f"{__name__}.{module.name}"), "ADAPTER", None)
        if isinstance(adapter, TrainerAdapter):
            if adapter.name in found:
                raise RuntimeError(f"two adapters are called {adapter.name!r} (one in {module.name})")
            found[adapter.name] = adapter
    return found


_REGISTRY = _discover()


def names() -> list[str]:
    return sorted(_REGISTRY)


def get(name: str) -> TrainerAdapter:
    """The adapter called `name`; KeyError (with the known names) if there is none."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown adapter {name!r}; known: {', '.join(names())}") from None


def recognising(path: Path) -> list[TrainerAdapter]:
    """The adapters whose trainer writes files like `path` (by name and directory)."""
    return [a for a in _REGISTRY.values() if a.recognise is not None and a.recognise(path)]


def detect(path: Path) -> TrainerAdapter | None:
    """The adapter whose trainer writes files like `path`, if exactly one recognises it.
    `generic` matches anything and so recognises nothing."""
    found = recognising(path)
    return found[0] if len(found) == 1 else None
