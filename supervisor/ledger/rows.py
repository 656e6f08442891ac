"""The ledger's rows as records: runs, attempts, verdicts, events, and reading them back."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from supervisor.core import Cause, ExitStatus, Phase
from supervisor.core.file_version import FileVersion, VersionKey
from supervisor.core.health import Carry
from supervisor.ledger.text import path_out


@dataclass(frozen=True)
class VerdictRow:
    """What the validator said about one version of one file."""

    path: str
    version: FileVersion
    ok: bool
    reason: str | None
    step: int | None
    epoch: int | None
    role: str | None
    checksum: str | None
    format: str | None
    seconds: float
    verified_at: float
    needs_globals: tuple[str, ...] = ()  # globals beyond torch's own safe ones it holds

    @property
    def key(self) -> VersionKey:
        return (self.path, self.version)


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


def _attempt(row: sqlite3.Row) -> AttemptRow:
    status = None
    if row["exit_code"] is not None or row["signal"] is not None:
        status = ExitStatus(code=row["exit_code"], signal=row["signal"])
    return AttemptRow(
        n=row["n"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        pid=row["pid"],
        identity=row["identity"],
        marker=row["marker"],
        status=status,
        cause=Cause(row["cause"]) if row["cause"] else None,
        stable=bool(row["stable"]),
        detail=row["detail"],
    )


_VERDICT_COLUMNS = (
    "path, size, mtime_ns, inode, ok, reason, step, epoch, role, checksum, format, seconds, verified_at,"
    " ctime_ns, globals"
)
_SELECT_VERDICTS = f"SELECT {_VERDICT_COLUMNS} FROM checkpoints"  # noqa: S608 (constant names)
_INSERT_VERDICT = (
    f"INSERT OR REPLACE INTO checkpoints ({_VERDICT_COLUMNS})"  # noqa: S608 (constant names)
    " VALUES (:path, :size, :mtime_ns, :inode, :ok, :reason, :step, :epoch, :role, :checksum,"
    " :format, :seconds, :verified_at, :ctime_ns, :globals)"
)


def _verdict(row: sqlite3.Row) -> VerdictRow:
    return VerdictRow(
        path=path_out(row["path"]),
        version=FileVersion(row["size"], row["mtime_ns"], row["inode"], row["ctime_ns"]),
        ok=bool(row["ok"]),
        reason=row["reason"],
        step=row["step"],
        epoch=row["epoch"],
        role=row["role"],
        checksum=row["checksum"],
        format=row["format"],
        seconds=row["seconds"],
        verified_at=row["verified_at"],
        needs_globals=tuple(json.loads(row["globals"])) if row["globals"] else (),
    )


_SELECT_RUN = (
    "SELECT name, config_path, phase, attempt, backoff_level, without_progress, stable, last_cause, last_exit,"
    " exit_code, relaunch_at, next_delay_s, supervisor_pid, updated_at, best_step, progressed, carry,"
    " last_progress_at FROM run WHERE id = 1"
)


def _run(row: sqlite3.Row) -> RunRow:
    return RunRow(
        name=row["name"],
        config_path=Path(path_out(row["config_path"])),
        phase=Phase(row["phase"]),
        attempt=row["attempt"],
        backoff_level=row["backoff_level"],
        without_progress=row["without_progress"],
        stable=bool(row["stable"]),
        last_cause=Cause(row["last_cause"]) if row["last_cause"] else None,
        last_exit=_status_from(json.loads(row["last_exit"])) if row["last_exit"] else None,
        exit_code=row["exit_code"],
        relaunch_at=row["relaunch_at"],
        next_delay_s=row["next_delay_s"],
        supervisor_pid=row["supervisor_pid"],
        updated_at=row["updated_at"],
        best_step=row["best_step"],
        progressed=bool(row["progressed"]),
        carry=Carry.from_json(row["carry"]),
        last_progress_at=row["last_progress_at"],
    )


def _status_dict(status: ExitStatus) -> dict[str, int | None]:
    return {"code": status.code, "signal": status.signal}


def _status_from(data: dict[str, int | None]) -> ExitStatus:
    return ExitStatus(code=data.get("code"), signal=data.get("signal"))
