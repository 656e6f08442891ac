"""What is on disk: entries named like checkpoints as `lstat` sees them, in the trainer's listing order, and the validator's request and verdict for one."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from supervisor.checkpoints.entries import Kind, kind_of
from supervisor.core.file_version import FileVersion, VersionKey
from supervisor.ledger import VerdictRow
from supervisor.validator.client import ValidationRequest, Verdict
from trainer_adapters.base import Layout, NamedCheckpoint


@dataclass(frozen=True)
class OnDisk:
    """An entry named like a checkpoint, as `lstat` sees it (a link is never followed)."""

    ckpt: NamedCheckpoint
    version: FileVersion
    kind: Kind = Kind.FILE

    @property
    def key(self) -> VersionKey:
        return (str(self.ckpt.path), self.version)

    @property
    def judged(self) -> bool:
        """Whether the validator is asked about it: a regular file the trainer may resume
        from (not a link, a directory, a FIFO..., nor a stray file in its way)."""
        return self.kind is Kind.FILE and self.ckpt.interferes is None


def stat_checkpoint(layout: Layout, path: Path) -> OnDisk | None:
    """The entry as a resume checkpoint of this layout, or None (not one, or gone)."""
    ckpt = layout.parse(path)
    if ckpt is None:
        return None
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return OnDisk(ckpt, FileVersion.of(st), kind_of(st.st_mode))


def listing(directory: Path, recursive: bool) -> Iterator[Path]:
    """Every entry below `directory` in directory order (what the trainer's `os.listdir`
    and `glob` see, and the order its ties follow); only real directories are entered."""
    stack = [directory]
    while stack:
        folder = stack.pop()
        with contextlib.suppress(OSError), os.scandir(folder) as entries:
            below = []
            for entry in entries:
                yield Path(entry.path)
                with contextlib.suppress(OSError):
                    if recursive and entry.is_dir(follow_symlinks=False):
                        below.append(Path(entry.path))
            stack.extend(reversed(below))


def request_for(layout: Layout, ckpt: NamedCheckpoint) -> ValidationRequest:
    expect = layout.expect(ckpt)
    return ValidationRequest(
        path=str(ckpt.path),
        required_keys=expect.required_keys,
        step_key=expect.step_key,
        epoch_key=expect.epoch_key,
        expected_step=ckpt.step,
        expected_epoch=ckpt.epoch,
        allowed_globals=expect.allowed_globals,
        model_key=expect.model_key,
        each_item=expect.each_item,
        when_not_empty=expect.when_not_empty,
        finite_except=expect.finite_except,
    )


def validated_globals(layout: Layout) -> tuple[str, ...]:
    """Every global the validator allows in this layout's checkpoints, any role."""
    allowed: list[str] = []
    for role in layout.roles:
        for name in layout.expect(NamedCheckpoint(Path("checkpoint"), role, None)).allowed_globals:
            if name not in allowed:
                allowed.append(name)
    return tuple(allowed)


def row_from(verdict: Verdict, role: str | None) -> VerdictRow:
    return VerdictRow(
        path=verdict.path,
        version=verdict.version,
        ok=verdict.ok,
        reason=verdict.reason,
        step=verdict.step,
        epoch=verdict.epoch,
        role=role,
        checksum=verdict.checksum,
        format=verdict.format,
        seconds=verdict.seconds,
        verified_at=time.time(),
        needs_globals=verdict.needs_globals,
    )
