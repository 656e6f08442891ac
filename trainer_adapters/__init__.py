"""Trainer adapters: what the supervisor knows about each training program."""

from __future__ import annotations

from pathlib import Path

from trainer_adapters import generic
from trainer_adapters.base import AdapterOptions, TrainerAdapter

__all__ = ["AdapterOptions", "TrainerAdapter", "detect", "get", "names"]

_REGISTRY: dict[str, TrainerAdapter] = {a.name: a for a in (generic.ADAPTER,)}


def names() -> list[str]:
    return sorted(_REGISTRY)


def get(name: str) -> TrainerAdapter:
    """The adapter called `name`; KeyError (with the known names) if there is none."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown adapter {name!r}; known: {', '.join(names())}") from None


def detect(path: Path) -> TrainerAdapter | None:
    """The adapter whose trainer writes files like `path` (by name and directory), if
    exactly one recognises it. `generic` matches anything and so recognises nothing."""
    found = [a for a in _REGISTRY.values() if a.recognise is not None and a.recognise(path)]
    return found[0] if len(found) == 1 else None
