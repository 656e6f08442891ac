"""The run's ledger: SQLite in state_dir (WAL, synchronous=FULL). Storage only.

It holds the core's counters (so a crash loop across reboots still gives up), one row
per attempt, an event log, and the checkpoint tables (`checkpoint_records`). The daemon
is the only writer; `status` opens it read-only. Methods do not commit: the daemon
commits once per decision, and before a launch, so a trainer never runs without a
durable record of it. What the user is told goes through `outputs.reporter`.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from supervisor.core import Cause, ExitStatus, State
from supervisor.ledger.checkpoint_records import CheckpointRecords
from supervisor.ledger.opening import (
    LedgerDamaged,
    LedgerError,
    _cannot_open,
    _check_intact,
    _check_not_lost,
    _corrupt,
    _damaged,
    _set_aside,
)
from supervisor.ledger.rows import (
    _SELECT_ATTEMPTS,
    _SELECT_RUN,
    AttemptRow,
    EventRow,
    RunRow,
    _attempt,
    _run,
    _status_dict,
)
from supervisor.ledger.schema import _SCHEMA, SCHEMA_VERSION, _migrate
from supervisor.ledger.text import counter, path_in

LEDGER_FILE = "ledger.sqlite3"


class Ledger(CheckpointRecords):
    """The run's counters, attempts and events; the checkpoint tables are inherited."""

    @classmethod
    def open(cls, state_dir: Path, *, new_ledger: bool = False) -> Ledger:
        """Open (creating if needed) the ledger for writing. LedgerDamaged where it is
        gone or damaged but the state_dir shows the run went on before; `new_ledger`
        starts a new one, keeping a damaged file beside it."""
        path = state_dir / LEDGER_FILE
        if new_ledger:
            _set_aside(path)
        else:
            _check_not_lost(state_dir, path)
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path)
            conn.row_factory = sqlite3.Row  # (the migrations read columns by name too)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            _check_intact(conn, path)
            conn.executescript(_SCHEMA)
            _migrate(conn)
            conn.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
            conn.commit()
        except LedgerDamaged:
            raise
        except sqlite3.DatabaseError as exc:
            if _corrupt(exc):
                raise _damaged(path, str(exc)) from None
            raise LedgerError(_cannot_open(path, exc)) from None  # busy, unreadable, full: not lost
        except OSError as exc:
            raise LedgerError(_cannot_open(path, exc)) from None
        return cls(conn, path)

    @classmethod
    def open_readonly(cls, state_dir: Path) -> Ledger | None:
        """Open for reading only; None if this run has no ledger yet."""
        path = state_dir / LEDGER_FILE
        _check_not_lost(state_dir, path)
        if not path.exists():
            return None
        try:
            conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
            tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as exc:
            if _corrupt(exc):
                raise _damaged(path, str(exc)) from None
            raise LedgerError(f"cannot read ledger {path}: {exc}") from None
        if not {"run", "attempts", "events", "checkpoints"} <= tables:
            conn.close()  # a supervisor is creating it right now: nothing to read yet
            return None
        return cls(conn, path)

    # --- the run's counters ---------------------------------------------------------

    def save_state(
        self,
        name: str,
        config_path: Path,
        state: State,
        *,
        relaunch_at: float | None,
        next_delay_s: float,
        supervisor_pid: int,
        now: float,
        last_progress_at: float | None = None,
    ) -> None:
        values: dict[str, object] = {
            "name": name,
            "config_path": path_in(str(config_path)),
            "phase": state.phase.value,
            "attempt": state.attempt,
            "backoff_level": state.backoff_level,
            "without_progress": state.without_progress,
            "stable": int(state.stable),
            "last_cause": state.last_cause.value if state.last_cause else None,
            "last_exit": json.dumps(_status_dict(state.last_exit)) if state.last_exit else None,
            "exit_code": state.exit_code,
            "relaunch_at": relaunch_at,
            "next_delay_s": next_delay_s,
            "supervisor_pid": supervisor_pid,
            "updated_at": now,
            "best_step": counter(state.best_step),
            "progressed": int(state.progressed),
            "carry": state.carry.to_json(),
            "last_progress_at": last_progress_at,
        }
        columns = ", ".join(values)  # (the dict's own literal keys: no outside text in the SQL)
        placeholders = ", ".join(f":{c}" for c in values)
        updates = ", ".join(f"{c} = excluded.{c}" for c in values)
        upsert = f"INSERT INTO run (id, {columns}) VALUES (1, {placeholders}) ON CONFLICT (id) DO UPDATE SET {updates}"  # noqa: S608
        self._write(upsert, values)

    def run(self) -> RunRow | None:
        row = self._one(_SELECT_RUN)
        return _run(row) if row is not None else None

    # --- attempts -------------------------------------------------------------------

    def begin_attempt(self, n: int, started_at: float, marker: str) -> None:
        self._write(
            "INSERT OR REPLACE INTO attempts (n, started_at, marker) VALUES (?, ?, ?)",
            (n, started_at, marker),
        )

    def set_attempt_process(self, n: int, pid: int, identity: str | None) -> None:
        self._write("UPDATE attempts SET pid = ?, identity = ? WHERE n = ?", (pid, identity, n))

    def end_attempt(
        self, n: int, ended_at: float, cause: Cause, status: ExitStatus | None, stable: bool, detail: str
    ) -> None:
        self._write(
            """UPDATE attempts SET ended_at = ?, cause = ?, exit_code = ?, signal = ?, stable = ?, detail = ?
               WHERE n = ?""",
            (
                ended_at,
                cause.value,
                status.code if status else None,
                status.signal if status else None,
                int(stable),
                self._text(detail),
                n,
            ),
        )

    def unfinished_attempt(self) -> AttemptRow | None:
        """The attempt whose end was never recorded (the supervisor died during it)."""
        row = self._one(_SELECT_ATTEMPTS + " WHERE ended_at IS NULL ORDER BY n DESC LIMIT 1")
        return _attempt(row) if row else None

    def attempts(self, limit: int = -1) -> list[AttemptRow]:
        """The last `limit` attempts (all when -1), oldest first."""
        rows = self._all(_SELECT_ATTEMPTS + " ORDER BY n DESC LIMIT ?", (limit,))
        return [_attempt(r) for r in reversed(rows)]

    # --- events ---------------------------------------------------------------------

    def causes(self) -> dict[str, int]:
        """How many attempts ended with each cause."""
        rows = self._all(
            "SELECT cause, COUNT(*) AS n FROM attempts WHERE cause IS NOT NULL GROUP BY cause ORDER BY cause"
        )
        return {row["cause"]: row["n"] for row in rows}

    def add_fingerprint(self, attempt: int, at: float, data: str) -> None:
        """The trainer's config files as they were at this attempt's launch."""
        self._write(
            "INSERT OR REPLACE INTO fingerprints (attempt, at, data) VALUES (?, ?, ?)", (attempt, at, data)
        )

    def last_fingerprint(self) -> tuple[int, str] | None:
        row = self._one("SELECT attempt, data FROM fingerprints ORDER BY attempt DESC LIMIT 1")
        return (row["attempt"], row["data"]) if row else None

    def add_event(self, at: float, attempt: int, kind: str, level: str, message: str) -> None:
        self._write(
            "INSERT INTO events (at, attempt, kind, level, message) VALUES (?, ?, ?, ?, ?)",
            (at, attempt, kind, level, self._text(message)),
        )

    def events(self, limit: int = 20) -> list[EventRow]:
        rows = self._all(
            "SELECT at, attempt, kind, level, message FROM events ORDER BY id DESC LIMIT ?", (limit,)
        )
        return [EventRow(r["at"], r["attempt"], r["kind"], r["level"], r["message"]) for r in reversed(rows)]
