"""`generic`: any PyTorch loop. Every option is optional.

Without a pattern, every `*.pt`, `*.pth`, `*.ckpt` and `*.safetensors` file is a
checkpoint whose step is the last number in its name. The trainer is assumed to resume
from `latest` if that file exists, else from the highest step.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import field_validator, model_validator

from trainer_adapters.base import (
    AdapterOptions,
    Expectations,
    LaunchHints,
    LayoutDefaults,
    NamedCheckpoint,
    TrainerAdapter,
)

SUFFIXES = (".pt", ".pth", ".ckpt", ".safetensors")
LAST_NUMBER = re.compile(r"(\d+)(?!.*\d)")


class GenericOptions(AdapterOptions):
    pattern: str | None = None
    """Checkpoint file names, with {step} where the step goes, e.g. "ckpt_{step}.pt"."""
    latest: str | None = None
    """A fixed name the trainer rewrites in place and resumes from first, e.g. "last.pt"."""
    required_keys: tuple[str, ...] = ()
    """Keys every checkpoint dict must contain, e.g. ["model", "optimizer"]."""
    step_key: str | None = None
    """The dict key holding the global step, if the checkpoint records one."""
    allowed_globals: tuple[str, ...] = ()
    """Globals a checkpoint may hold beyond tensors and plain containers, e.g.
    ["pathlib.PosixPath"]; anything else is rejected (checkpoints are untrusted input)."""

    @model_validator(mode="after")
    def _latest_needs_a_step_key(self) -> GenericOptions:
        # A fixed name says nothing of its step: without the content's step it could never
        # be chosen to resume from, and the planner would move it aside.
        if self.latest is not None and self.step_key is None:
            raise ValueError(
                "latest needs step_key: the step of a fixed-name checkpoint comes from its content"
            )
        return self

    @field_validator("pattern")
    @classmethod
    def _has_step(cls, pattern: str | None) -> str | None:
        if pattern is not None and pattern.count("{step}") != 1:
            raise ValueError("must contain {step} exactly once, e.g. 'ckpt_{step}.pt'")
        return pattern


@dataclass(frozen=True)
class GenericLayout(LayoutDefaults):
    options: GenericOptions
    roles: tuple[str, ...] = ("model",)
    recursive: bool = True

    def parse(self, path: Path) -> NamedCheckpoint | None:
        name = path.name
        if self.options.latest is not None and name == self.options.latest:
            return NamedCheckpoint(path, "model", None, in_place=True)
        if self.options.pattern is not None:
            head, tail = self.options.pattern.split("{step}")
            match = re.fullmatch(f"{re.escape(head)}(\\d+){re.escape(tail)}", name)
            return NamedCheckpoint(path, "model", int(match.group(1))) if match else None
        if name.startswith(".") or not name.endswith(SUFFIXES):
            return None
        number = LAST_NUMBER.search(name)
        return NamedCheckpoint(path, "model", int(number.group(1)) if number else None)

    def ignored(self, path: Path) -> str | None:
        return None

    def expect(self, ckpt: NamedCheckpoint) -> Expectations:
        return Expectations(
            required_keys=self.options.required_keys,
            step_key=self.options.step_key,
            allowed_globals=self.options.allowed_globals,
        )

    def pick(self, files: Sequence[NamedCheckpoint]) -> dict[str, NamedCheckpoint]:
        latest = [f for f in files if f.in_place]
        if latest:
            return {"model": latest[0]}
        numbered = [f for f in files if f.step is not None]
        if not numbered:
            return {}
        return {"model": max(numbered, key=lambda f: (f.step or 0, str(f.path)))}


def _layout(options: AdapterOptions) -> GenericLayout:
    assert isinstance(options, GenericOptions)
    return GenericLayout(options)


ADAPTER = TrainerAdapter(
    name="generic",
    summary="any PyTorch loop: supervises the process; checkpoints from an optional pattern",
    options=GenericOptions,
    layout=_layout,
    launch=LaunchHints(example="python train.py"),
    docs="docs/trainers/generic.md",
    needs_checkpoint_dir=False,
)
