"""Opening the ledger file safely: a lost or damaged ledger beside the run's history is refused, never replaced."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

_FULL_BELOW_BYTES = 1 << 20  # less free than this on the state disk: call it full


class LedgerError(Exception):
    pass


class LedgerDamaged(LedgerError):
    """The ledger is gone or damaged while the state_dir holds the run's history: going
    on would start the run over (counters, attempts, the completed mark all lost)."""


# What a state_dir holds once a run has gone on in it (besides the ledger).
HISTORY = ("quarantine", "verified", "logs/trainer.log")
DAMAGED_SUFFIX = ".damaged-"


def _check_not_lost(state_dir: Path, path: Path) -> None:
    """A ledger missing or empty where the run's history lies beside it was lost."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        size = None
    except OSError as exc:
        raise LedgerError(f"cannot read ledger {path}: {exc.strerror or exc}") from None
    if size not in (None, 0):
        return
    history = [name for name in HISTORY if _holds_something(state_dir / name)]
    if history:
        what = "missing" if size is None else "empty (0 bytes)"
        raise _damaged(path, what, history)


def _holds_something(path: Path) -> bool:
    try:
        return path.is_file() or (path.is_dir() and any(path.iterdir()))
    except OSError:
        return False


_CORRUPT = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB


def _cannot_open(path: Path, exc: Exception) -> str:
    """Why the ledger cannot be opened; SQLite says only "disk I/O error" when its
    journal cannot be made on a full disk, so a full one is named."""
    message = f"cannot open ledger {path}: {exc}"
    try:
        fs = os.statvfs(path.parent)
    except OSError:
        return message
    free = fs.f_bavail * fs.f_frsize
    if free < _FULL_BELOW_BYTES:
        message += f" (its filesystem is full: {free} bytes free; make room there and start again)"
    return message


def _corrupt(exc: sqlite3.DatabaseError) -> bool:
    """The file is damaged (not a database, or corrupt): not merely busy or unreadable."""
    return (
        getattr(exc, "sqlite_errorcode", None) in _CORRUPT
        or "not a database" in str(exc)
        or "malformed" in str(exc)
    )


def _check_intact(conn: sqlite3.Connection, path: Path) -> None:
    (verdict,) = conn.execute("PRAGMA quick_check").fetchone()
    if verdict != "ok":
        raise _damaged(path, f"damaged ({verdict})")


def _damaged(path: Path, why: str, history: list[str] | None = None) -> LedgerDamaged:
    held = f" while {path.parent} holds the run's history ({', '.join(history)})" if history else ""
    return LedgerDamaged(
        f"ledger {path} is {why}{held}: the run's counters, attempts and completion are not known. Nothing "
        f"was started. To start a new ledger, keeping the old file beside it ({path.name}{DAMAGED_SUFFIX}<time>): "
        "train-supervisor run -c FILE --new-ledger"
    )


def _set_aside(path: Path) -> None:
    """Move the ledger (and its WAL) aside under a dated name; nothing is deleted."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for suffix in ("", "-wal", "-shm"):
        current = path.with_name(path.name + suffix)
        if current.exists():
            current.rename(path.with_name(f"{path.name}{suffix}{DAMAGED_SUFFIX}{stamp}"))
