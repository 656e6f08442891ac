"""The one small interface every trainer adapter shares.

An adapter is mostly data: a name, the options a config may set under `[adapter]`,
facts about the trainer, and a `Layout` built from those options that answers three
questions about the checkpoint directory:

- `parse(path)`: is this file a resume checkpoint, and which role/step does its name say?
  (Exports, pretrained weights and temp files are not: they return None.)
- `expect(ckpt)`: what a good file of that role must contain (keys, step key, globals).
- `pick(files)`: which file per role the trainer's *own* resume logic would load from
  these files — a faithful model, so the planner can prove where the trainer will land.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ConfigDict


class AdapterOptions(BaseModel):
    """Adapter-specific keys of the `[adapter]` table. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class NamedCheckpoint:
    """What an adapter reads from a checkpoint's path."""

    path: Path
    role: str  # which part of a resume state: "model", or "G" and "D" for paired layouts
    step: int | None  # from the name; None for a fixed name such as model_last.pt
    epoch: int | None = None
    in_place: bool = False  # the trainer rewrites this very name (a "latest" or sentinel file)


@dataclass(frozen=True)
class Expectations:
    """What the validator must find inside a good checkpoint of one role."""

    required_keys: tuple[str, ...] = ()
    step_key: str | None = None
    epoch_key: str | None = None
    allowed_globals: tuple[str, ...] = ()


class Layout(Protocol):
    @property
    def roles(self) -> tuple[str, ...]:
        """The roles that together make one resume state."""
        ...

    def parse(self, path: Path) -> NamedCheckpoint | None: ...

    def expect(self, ckpt: NamedCheckpoint) -> Expectations: ...

    def pick(self, files: Sequence[NamedCheckpoint]) -> dict[str, NamedCheckpoint]:
        """The trainer's choice per role ({} = it would start from scratch). Files with
        a fixed name carry the step their verified content reported, if known."""
        ...


@dataclass(frozen=True)
class TrainerAdapter:
    name: str
    summary: str
    options: type[AdapterOptions]
    layout: Callable[[AdapterOptions], Layout]
    # False for trainers whose exit status says nothing (they exit 0 on a crash or
    # non-zero on success); completion must then come from elsewhere.
    exit_codes_trusted: bool = True
    # Does this file (name and directory) look like one of this trainer's resume
    # checkpoints? Used by `verify` without --adapter.
    recognise: Callable[[Path], bool] | None = None
