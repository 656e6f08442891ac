"""The ledger's connection: writes that survive a full disk, commits, text made safe to keep, meta."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from supervisor.ledger.text import Redactor, readable

_DISK_ERRORS = (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR) if hasattr(sqlite3, "SQLITE_FULL") else (13, 10)


class Storage:
    """One SQLite connection whose rows are read by column name. Methods do not commit:
    the caller commits once per decision (`commit`)."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        conn.row_factory = sqlite3.Row
        self._conn = conn
        self.path = path
        self.redact = Redactor()  # secrets never stored
        self._write_failing = False  # said once until a write works again

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

    def _write(self, sql: str, params: tuple[object, ...] | dict[str, object] = ()) -> None:
        try:
            self._conn.execute(sql, params)
        except sqlite3.OperationalError as exc:
            self._write_failed(exc)

    def _write_failed(self, exc: sqlite3.OperationalError) -> None:
        if getattr(exc, "sqlite_errorcode", None) not in _DISK_ERRORS and "disk" not in str(exc):
            raise exc
        if not self._write_failing:
            import structlog  # only here: reading the ledger (`status`) need not load it

            structlog.get_logger("supervisor").error(
                "the ledger cannot be written (the state disk is full or failing); supervision goes on",
                ledger=str(self.path),
                error=str(exc),
            )
        self._write_failing = True

    def _text(self, text: str) -> str:
        return self.redact(readable(text))

    def _one(self, sql: str, params: tuple[object, ...] = ()) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self._conn.execute(sql, params).fetchone()
        return row

    def _all(self, sql: str, params: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        return list(self._conn.execute(sql, params).fetchall())

    # --- facts kept between supervisors (schema version, model shapes, rollbacks) ---------

    def meta(self, key: str) -> str | None:
        row = self._one("SELECT value FROM meta WHERE key = ?", (key,))
        return str(row["value"]) if row else None

    def set_meta(self, key: str, value: str) -> None:
        self._write(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )
