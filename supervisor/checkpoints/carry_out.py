"""Carrying a plan out on disk: moving files aside and putting verified copies back, through the pinned checkpoint directory. Files only, no ledger; runs in a thread."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import structlog

from supervisor.checkpoints import copies, store
from supervisor.checkpoints.pinned import DirectoryChanged, PinnedDir, open_below
from supervisor.checkpoints.plan import Plan
from supervisor.core.file_version import FileVersion
from supervisor.ledger import VerdictRow

log = structlog.get_logger("supervisor.checkpoints")


def move_aside(
    the_plan: Plan, state_dir: Path, verdicts: Mapping[str, object], pinned: PinnedDir | None
) -> list[tuple[str, store.MoveResult]]:
    """Quarantine the plan's moves. A move that fails (a full state disk, a directory
    swapped under us) is a result too: the moves before it stay recorded."""
    results = []
    now = store.now_utc()
    for move in the_plan.moves:
        if not os.path.lexists(move.path):
            continue
        details = {"verdict": verdicts.get(str(move.path))}
        try:
            with directory_fd(move.path.parent, pinned) as dir_fd:
                result = store.quarantine(move.path, state_dir, move.reason, details, now, dir_fd=dir_fd)
        except (OSError, DirectoryChanged) as exc:
            result = store.MoveResult(move.path, False, why(exc))
        results.append((str(move.path), result))
    return results


def restore(the_plan: Plan, pinned: PinnedDir | None) -> tuple[list[VerdictRow], list[str]]:
    """Put the plan's verified copies back; returns the verdicts to record for the
    copies put back, and why each that could not be put back was not."""
    rows, failed = [], []
    for r in the_plan.restores:
        try:
            with directory_fd(r.path.parent, pinned, create=True) as dir_fd:
                st = copies.restore(r.copy, r.path, dir_fd=dir_fd)
        except (OSError, DirectoryChanged) as exc:
            failed.append(f"could not restore {r.path} from {r.copy}: {why(exc)}")
            continue
        log.info("restored a verified copy", path=str(r.path), step=r.step)
        role = next((role for role, p in the_plan.target.items() if p == r.path), None)
        verified = copies.snapshot_verdict(r.copy)
        rows.append(
            VerdictRow(
                path=str(r.path),
                version=FileVersion.of(st),
                ok=True,
                reason=None,
                step=r.step,
                epoch=verified.get("epoch") if isinstance(verified.get("epoch"), int) else None,
                role=role,
                checksum=verified.get("checksum") if isinstance(verified.get("checksum"), str) else None,
                format=None,
                seconds=0.0,
                verified_at=time.time(),
                needs_globals=tuple(str(g) for g in verified.get("needs_globals") or ()),
            )
        )
    return rows, failed


@contextlib.contextmanager
def directory_fd(folder: Path, pinned: PinnedDir | None, *, create: bool = False) -> Iterator[int | None]:
    """The descriptor to move and restore through: the pinned checkpoint directory
    (checked to be the one pinned at start), or the folder below it (`create`: made
    where it is missing). None without a pinned directory: plain paths."""
    if pinned is None:
        yield None
        return
    if not folder.is_relative_to(pinned.path):
        raise DirectoryChanged(
            f"{folder} is not in the checkpoint directory {pinned.path}: nothing goes there"
        )
    with pinned.opened() as root_fd:
        if folder == pinned.path:
            yield root_fd
            return
        fd = open_below(root_fd, pinned.path, folder, create=create)
        try:
            yield fd
        finally:
            os.close(fd)


def why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror if not exc.filename else f"{exc.strerror} ({exc.filename})"
    return str(exc)
