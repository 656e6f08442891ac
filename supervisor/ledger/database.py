"""The run's ledger: SQLite in state_dir (WAL, synchronous=FULL).

It holds the core's counters (so a crash loop across reboots still gives up), one row
per attempt, and an event log. The daemon is the only writer; `status` opens it
read-only. Methods do not commit: the daemon commits once per decision, and before a
launch, so a trainer never runs without a durable record of it.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import structlog

from supervisor.core import Cause, ExitStatus, Phase, State
from supervisor.core.health import Carry
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
    _INSERT_VERDICT,
    _SELECT_ATTEMPTS,
    _SELECT_VERDICTS,
    AttemptRow,
    EventRow,
    RunRow,
    VerdictRow,
    _attempt,
    _status_dict,
    _status_from,
    _verdict,
)
from supervisor.ledger.schema import _SCHEMA, SCHEMA_VERSION, _migrate
from supervisor.ledger.text import Redactor, counter, path_in, path_out, readable

LEDGER_FILE = "ledger.sqlite3"


class Ledger:
    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        self.on_event: Callable[[EventRow], None] | None = None  # told of every event added
        self.redact = Redactor()  # secrets never stored
        self._write_failing = False  # said once until a write works again

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
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as exc:
            if _corrupt(exc):
                raise _damaged(path, str(exc)) from None
            raise LedgerError(f"cannot read ledger {path}: {exc}") from None
        if not {"run", "attempts", "events", "checkpoints"} <= tables:
            conn.close()  # a supervisor is creating it right now: nothing to read yet
            return None
        return cls(conn, path)

    def close(self) -> None:
        self._conn.close()

    def commit(self) -> bool:
        """Make what was written durable. A full or failing disk is said once, never
        raised: supervision goes on (False), and the next commit tries again."""
        try:
            self._conn.commit()
        except sqlite3.OperationalError as exc:
            self._write_failed(exc)
            return False
        self._write_failing = False
        return True

    def _write(self, sql: str, params: tuple[object, ...] = ()) -> None:
        try:
            self._conn.execute(sql, params)
        except sqlite3.OperationalError as exc:
            self._write_failed(exc)

    def _write_failed(self, exc: sqlite3.OperationalError) -> None:
        if getattr(exc, "sqlite_errorcode", None) not in _DISK_ERRORS and "disk" not in str(exc):
            raise exc
        if not self._write_failing:
            structlog.get_logger("supervisor").error(
                "the ledger cannot be written (the state disk is full or failing); supervision goes on",
                ledger=str(self.path),
                error=str(exc),
            )
        self._write_failing = True

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
        exit_json = json.dumps(_status_dict(state.last_exit)) if state.last_exit else None
        self._write(
            """INSERT INTO run (id, name, config_path, phase, attempt, backoff_level, without_progress, stable,
                   last_cause, last_exit, exit_code, relaunch_at, next_delay_s, supervisor_pid, updated_at,
                best_step, progressed, carry, last_progress_at)
               VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (id) DO UPDATE SET name = excluded.name, config_path = excluded.config_path,
                   phase = excluded.phase, attempt = excluded.attempt, backoff_level = excluded.backoff_level,
                   without_progress = excluded.without_progress, stable = excluded.stable,
                   last_cause = excluded.last_cause, last_exit = excluded.last_exit,
                   exit_code = excluded.exit_code, relaunch_at = excluded.relaunch_at,
                   next_delay_s = excluded.next_delay_s, supervisor_pid = excluded.supervisor_pid,
                   updated_at = excluded.updated_at, best_step = excluded.best_step,
                   progressed = excluded.progressed, carry = excluded.carry,
                   last_progress_at = excluded.last_progress_at""",
            (
                name,
                path_in(str(config_path)),
                state.phase.value,
                state.attempt,
                state.backoff_level,
                state.without_progress,
                int(state.stable),
                state.last_cause.value if state.last_cause else None,
                exit_json,
                state.exit_code,
                relaunch_at,
                next_delay_s,
                supervisor_pid,
                now,
                counter(state.best_step),
                int(state.progressed),
                state.carry.to_json(),
                last_progress_at,
            ),
        )

    def run(self) -> RunRow | None:
        row = self._conn.execute(
            """SELECT name, config_path, phase, attempt, backoff_level, without_progress, stable, last_cause,
                      last_exit, exit_code, relaunch_at, next_delay_s, supervisor_pid, updated_at, best_step,
                      progressed, carry, last_progress_at
               FROM run WHERE id = 1"""
        ).fetchone()
        if row is None:
            return None
        return RunRow(
            name=row[0],
            config_path=Path(path_out(row[1])),
            phase=Phase(row[2]),
            attempt=row[3],
            backoff_level=row[4],
            without_progress=row[5],
            stable=bool(row[6]),
            last_cause=Cause(row[7]) if row[7] else None,
            last_exit=_status_from(json.loads(row[8])) if row[8] else None,
            exit_code=row[9],
            relaunch_at=row[10],
            next_delay_s=row[11],
            supervisor_pid=row[12],
            updated_at=row[13],
            best_step=row[14],
            progressed=bool(row[15]),
            carry=Carry.from_json(row[16]),
            last_progress_at=row[17],
        )

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
        row = self._conn.execute(
            _SELECT_ATTEMPTS + " WHERE ended_at IS NULL ORDER BY n DESC LIMIT 1"
        ).fetchone()
        return _attempt(row) if row else None

    def attempts(self, limit: int = -1) -> list[AttemptRow]:
        """The last `limit` attempts (all when -1), oldest first."""
        rows = self._conn.execute(_SELECT_ATTEMPTS + " ORDER BY n DESC LIMIT ?", (limit,)).fetchall()
        return [_attempt(r) for r in reversed(rows)]

    # --- checkpoint verdicts, plans, quarantine -------------------------------------

    def add_verdict(self, row: VerdictRow) -> None:
        self._write(
            _INSERT_VERDICT,
            (
                path_in(row.path),
                row.size,
                row.mtime_ns,
                row.inode,
                int(row.ok),
                self._text(row.reason) if row.reason is not None else None,
                counter(row.step),
                counter(row.epoch),
                row.role,
                row.checksum,
                row.format,
                row.seconds,
                row.verified_at,
                row.ctime_ns,
                json.dumps(list(row.needs_globals)) if row.needs_globals else None,
            ),
        )

    def verdict(self, path: str, size: int, mtime_ns: int, inode: int, ctime_ns: int) -> VerdictRow | None:
        """The verdict for exactly this file version; a file changed since has none."""
        row = self._conn.execute(
            _SELECT_VERDICTS + " WHERE path = ? AND size = ? AND mtime_ns = ? AND inode = ? AND ctime_ns = ?",
            (path_in(path), size, mtime_ns, inode, ctime_ns),
        ).fetchone()
        return _verdict(row) if row else None

    def verdicts(self, limit: int = 200) -> list[VerdictRow]:
        rows = self._conn.execute(_SELECT_VERDICTS + " ORDER BY verified_at DESC LIMIT ?", (limit,))
        return [_verdict(r) for r in reversed(rows.fetchall())]

    def add_plan(
        self, at: float, attempt: int, target_step: int | None, ok: bool, summary: str, detail: str
    ) -> None:
        self._write(
            "INSERT INTO plans (at, attempt, target_step, ok, summary, detail) VALUES (?, ?, ?, ?, ?, ?)",
            (at, attempt, counter(target_step), int(ok), self._text(summary), self._text(detail)),
        )

    def last_plan(self) -> tuple[float, int, str] | None:
        row = self._conn.execute("SELECT at, attempt, summary FROM plans ORDER BY id DESC LIMIT 1").fetchone()
        return (row[0], row[1], row[2]) if row else None

    def plans(self) -> list[tuple[int, int | None, bool, str]]:
        """Every plan, oldest first: (attempt, target step, ok, detail as JSON)."""
        rows = self._conn.execute("SELECT attempt, target_step, ok, detail FROM plans ORDER BY id")
        return [(attempt, target, bool(ok), detail) for attempt, target, ok, detail in rows]

    def add_quarantined(self, at: float, original: str, moved_to: str, reason: str) -> None:
        self._write(
            "INSERT INTO quarantined (at, original, moved_to, reason) VALUES (?, ?, ?, ?)",
            (at, path_in(original), path_in(moved_to), self._text(reason)),
        )

    def quarantine_destinations(self) -> set[str]:
        """Where every recorded quarantine move put its file."""
        return {path_out(row[0]) for row in self._conn.execute("SELECT moved_to FROM quarantined")}

    def verified_at_step(self, step: int) -> list[VerdictRow]:
        """The newest good verdict of each file whose content is at `step`."""
        rows = self._conn.execute(
            _SELECT_VERDICTS + " WHERE ok = 1 AND step = ? ORDER BY verified_at", (counter(step),)
        ).fetchall()
        return list({row.path: row for row in map(_verdict, rows)}.values())

    def newest_complete_state(self, roles: tuple[str, ...]) -> int | None:
        """The highest step at which a file of every role was ever verified: a complete
        resume state existed there (a lone G never was one). States a rollback gave up on
        (verified before it, at or after its bound) are not counted."""
        disowned = self.rollbacks()
        found: dict[int, set[str]] = {}
        for step, role, verified_at in self._conn.execute(
            "SELECT step, role, verified_at FROM checkpoints"
            " WHERE ok = 1 AND step IS NOT NULL AND role IS NOT NULL"
        ):
            if not any(step >= bound and verified_at <= at for bound, at in disowned):
                found.setdefault(step, set()).add(role)
        complete = [step for step, have in found.items() if set(roles) <= have]
        return max(complete) if complete else None

    def rollback_carried_out(self) -> None:
        """The pending NaN rollback was carried out outside the daemon (`plan --apply`):
        the next supervisor does not carry it out again over newer saves."""
        row = self._conn.execute("SELECT carry FROM run WHERE id = 1").fetchone()
        if row is not None and row[0]:
            carry = replace(Carry.from_json(row[0]), nan_below=None)
            self._write("UPDATE run SET carry = ? WHERE id = 1", (carry.to_json(),))

    def add_rollback(self, below_step: int, at: float) -> None:
        """A rollback gave up on every state verified so far at or after `below_step`."""
        self.set_meta(_ROLLBACKS, json.dumps([*self.rollbacks(), [below_step, at]]))

    def rollbacks(self) -> list[tuple[int, float]]:
        try:
            kept = json.loads(self.meta(_ROLLBACKS) or "[]")
            return [(int(bound), float(at)) for bound, at in kept]
        except (ValueError, TypeError):
            return []

    # --- facts about the machine the last supervisor ran on ----------------------------

    def meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else None

    def set_meta(self, key: str, value: str) -> None:
        self._write(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # --- events ---------------------------------------------------------------------

    def causes(self) -> dict[str, int]:
        """How many attempts ended with each cause."""
        rows = self._conn.execute(
            "SELECT cause, COUNT(*) FROM attempts WHERE cause IS NOT NULL GROUP BY cause ORDER BY cause"
        ).fetchall()
        return {cause: n for cause, n in rows}

    def add_fingerprint(self, attempt: int, at: float, data: str) -> None:
        """The trainer's config files as they were at this attempt's launch."""
        self._write(
            "INSERT OR REPLACE INTO fingerprints (attempt, at, data) VALUES (?, ?, ?)", (attempt, at, data)
        )

    def last_fingerprint(self) -> tuple[int, str] | None:
        row = self._conn.execute(
            "SELECT attempt, data FROM fingerprints ORDER BY attempt DESC LIMIT 1"
        ).fetchone()
        return (row[0], row[1]) if row else None

    def add_event(self, at: float, attempt: int, kind: str, level: str, message: str) -> None:
        message = self._text(message)
        if self.on_event is not None:
            try:
                self.on_event(EventRow(at, attempt, kind, level, message))
            except Exception:  # a listener (notifications) never stands in the ledger's way
                structlog.get_logger("supervisor").exception("an event listener failed")
        self._write(
            "INSERT INTO events (at, attempt, kind, level, message) VALUES (?, ?, ?, ?, ?)",
            (at, attempt, kind, level, message),
        )

    def tell(self, attempt: int, kind: str, level: str, message: str) -> None:
        """Log an event, keep it, and commit: for edges that report outside a decision."""
        getattr(structlog.get_logger("supervisor"), level)(self._text(message), kind=kind, attempt=attempt)
        self.add_event(time.time(), attempt, kind, level, message)
        self.commit()

    def events(self, limit: int = 20) -> list[EventRow]:
        rows = self._conn.execute(
            "SELECT at, attempt, kind, level, message FROM events ORDER BY id DESC LIMIT ?", (limit,)
        ).fetchall()
        return [EventRow(*r) for r in reversed(rows)]

    def _text(self, text: str) -> str:
        return self.redact(readable(text))

    # --- read-only queries for status and metrics -----------------------------------

    def validation_times(self) -> list[float]:
        """How long each recorded checkpoint validation took (seconds). A restored verified
        copy is recorded as good without a validation (no format): not counted."""
        rows = self._conn.execute("SELECT seconds FROM checkpoints WHERE ok = 0 OR format IS NOT NULL")
        return [row[0] for row in rows]


_DISK_ERRORS = (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR) if hasattr(sqlite3, "SQLITE_FULL") else (13, 10)
_ROLLBACKS = "rollbacks"  # meta: [[below_step, at], ...], the states rollbacks gave up on
