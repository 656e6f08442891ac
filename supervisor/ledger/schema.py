"""The ledger's tables (DDL) and their migrations."""

from __future__ import annotations

import sqlite3

SCHEMA_VERSION = 4

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS run (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    name TEXT NOT NULL,
    config_path TEXT NOT NULL,
    phase TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    backoff_level INTEGER NOT NULL,
    without_progress INTEGER NOT NULL,
    stable INTEGER NOT NULL,
    last_cause TEXT,
    last_exit TEXT,
    exit_code INTEGER,
    relaunch_at REAL,
    next_delay_s REAL,
    supervisor_pid INTEGER,
    updated_at REAL NOT NULL,
    best_step INTEGER,
    progressed INTEGER NOT NULL DEFAULT 0,
    carry TEXT,
    last_progress_at REAL
) STRICT;
CREATE TABLE IF NOT EXISTS attempts (
    n INTEGER PRIMARY KEY,
    started_at REAL NOT NULL,
    ended_at REAL,
    pid INTEGER,
    identity TEXT,
    marker TEXT NOT NULL,
    exit_code INTEGER,
    signal INTEGER,
    cause TEXT,
    stable INTEGER,
    detail TEXT
) STRICT;
CREATE TABLE IF NOT EXISTS checkpoints (
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    ok INTEGER NOT NULL,
    reason TEXT,
    step INTEGER,
    epoch INTEGER,
    role TEXT,
    checksum TEXT,
    format TEXT,
    seconds REAL NOT NULL,
    verified_at REAL NOT NULL,
    ctime_ns INTEGER NOT NULL DEFAULT 0,
    globals TEXT,
    PRIMARY KEY (path, size, mtime_ns, inode)
) STRICT;
CREATE TABLE IF NOT EXISTS plans (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    attempt INTEGER NOT NULL,
    target_step INTEGER,
    ok INTEGER NOT NULL,
    summary TEXT NOT NULL,
    detail TEXT NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS quarantined (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    original TEXT NOT NULL,
    moved_to TEXT NOT NULL,
    reason TEXT NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS fingerprints (
    attempt INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    data TEXT NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    attempt INTEGER NOT NULL,
    kind TEXT NOT NULL,
    level TEXT NOT NULL,
    message TEXT NOT NULL
) STRICT;
"""


def _migrate(conn: sqlite3.Connection) -> None:
    """Ledgers from schema 1 lack the best verified step; from 2, the detectors' carry;
    from 3, the globals a verified file needs to load."""
    columns = {row["name"] for row in conn.execute("PRAGMA table_info(run)")}
    if "best_step" not in columns:
        conn.execute("ALTER TABLE run ADD COLUMN best_step INTEGER")
    if "progressed" not in columns:
        conn.execute("ALTER TABLE run ADD COLUMN progressed INTEGER NOT NULL DEFAULT 0")
    if "carry" not in columns:
        conn.execute("ALTER TABLE run ADD COLUMN carry TEXT")
    if "last_progress_at" not in columns:
        conn.execute("ALTER TABLE run ADD COLUMN last_progress_at REAL")
    checkpoint_columns = {row["name"] for row in conn.execute("PRAGMA table_info(checkpoints)")}
    if "ctime_ns" not in checkpoint_columns:
        conn.execute("ALTER TABLE checkpoints ADD COLUMN ctime_ns INTEGER NOT NULL DEFAULT 0")
    if "globals" not in checkpoint_columns:
        conn.execute("ALTER TABLE checkpoints ADD COLUMN globals TEXT")
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
