"""The ledger's rows as records: runs, attempts, verdicts, events, and reading them back."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from supervisor.core import Cause, ExitStatus, Phase
from supervisor.core.health import Carry
from supervisor.ledger.text import path_out


@dataclass(frozen=True)
class VerdictRow:
    path: str
    size: int
    mtime_ns: int
    inode: int
    ok: bool
    reason: str | None
    step: int | None
    epoch: int | None
    role: str | None
    checksum: str | None
    format: str | None
    seconds: float
    verified_at: float
    ctime_ns: int = 0
    needs_globals: tuple[str, ...] = ()  # globals beyond torch's own safe ones it holds


@dataclass(frozen=True)
class RunRow:
    name: str
    config_path: Path
    phase: Phase
    attempt: int
    backoff_level: int
    without_progress: int
    stable: bool
    last_cause: Cause | None
    last_exit: ExitStatus | None
    exit_code: int | None
    relaunch_at: float | None
    next_delay_s: float | None
    supervisor_pid: int | None
    updated_at: float
    best_step: int | None
    progressed: bool
    carry: Carry = field(default_factory=Carry)
    last_progress_at: float | None = None  # wall time of the newest sign of progress


@dataclass(frozen=True)
class AttemptRow:
    n: int
    started_at: float
    ended_at: float | None
    pid: int | None
    identity: str | None
    marker: str
    status: ExitStatus | None
    cause: Cause | None
    stable: bool
    detail: str | None


@dataclass(frozen=True)
class EventRow:
    at: float
    attempt: int
    kind: str
    level: str
    message: str


_SELECT_ATTEMPTS = "SELECT n, started_at, ended_at, pid, identity, marker, exit_code, signal, cause, stable, detail FROM attempts"


def _attempt(row: tuple[Any, ...]) -> AttemptRow:
    status = None
    if row[6] is not None or row[7] is not None:
        status = ExitStatus(code=row[6], signal=row[7])
    return AttemptRow(
        n=row[0],
        started_at=row[1],
        ended_at=row[2],
        pid=row[3],
        identity=row[4],
        marker=row[5],
        status=status,
        cause=Cause(row[8]) if row[8] else None,
        stable=bool(row[9]),
        detail=row[10],
    )


_SELECT_VERDICTS = (
    "SELECT path, size, mtime_ns, inode, ok, reason, step, epoch, role, checksum, format, seconds, verified_at,"
    " ctime_ns, globals FROM checkpoints"
)
_INSERT_VERDICT = (
    "INSERT OR REPLACE INTO checkpoints (path, size, mtime_ns, inode, ok, reason, step, epoch, role, checksum,"
    " format, seconds, verified_at, ctime_ns, globals) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _verdict(row: tuple[Any, ...]) -> VerdictRow:
    return VerdictRow(
        path=path_out(row[0]),
        size=row[1],
        mtime_ns=row[2],
        inode=row[3],
        ok=bool(row[4]),
        reason=row[5],
        step=row[6],
        epoch=row[7],
        role=row[8],
        checksum=row[9],
        format=row[10],
        seconds=row[11],
        verified_at=row[12],
        ctime_ns=row[13],
        needs_globals=tuple(json.loads(row[14])) if row[14] else (),
    )


def _status_dict(status: ExitStatus) -> dict[str, int | None]:
    return {"code": status.code, "signal": status.signal}


def _status_from(data: dict[str, int | None]) -> ExitStatus:
    return ExitStatus(code=data.get("code"), signal=data.get("signal"))
