"""Reading what a finished run recorded: its ledger events, attempt causes, and completion."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.support.twins import run_cli, status


def events(tmp_path: Path, kind: str | None = None) -> list[tuple[float, int, str, str]]:
    with sqlite3.connect(tmp_path / "state" / "ledger.sqlite3") as conn:
        rows = conn.execute("SELECT at, attempt, kind, message FROM events ORDER BY id").fetchall()
    return [r for r in rows if kind is None or r[2] == kind]


def causes(config: Path) -> list[str]:
    return [a["cause"] for a in status(config)["attempts"]]


def completed(config: Path) -> None:
    result = run_cli("run", "-c", str(config))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
