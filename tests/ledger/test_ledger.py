from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from supervisor.core import Cause, ExitStatus, Phase, State
from supervisor.ledger import LEDGER_FILE, Ledger


def save(ledger: Ledger, state: State) -> None:
    ledger.save_state(
        "r", Path("/c.toml"), state, relaunch_at=None, next_delay_s=1.0, supervisor_pid=1, now=5.0
    )
    ledger.commit()


def test_counters_and_attempts_survive_reopening(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path)
    ledger.begin_attempt(1, 10.0, "r:1:aa")
    ledger.set_attempt_process(1, 1234, "boot:1234:99")
    ledger.end_attempt(1, 12.0, Cause.CRASH, ExitStatus(signal=9), False, "last output: boom")
    ledger.begin_attempt(2, 13.0, "r:2:bb")
    ledger.add_event(13.0, 2, "launched", "info", "attempt 2 running")
    state = State(phase=Phase.RUNNING, attempt=2, backoff_level=1, without_progress=1, last_cause=Cause.CRASH)
    save(ledger, replace_exit(state))
    ledger.close()

    again = Ledger.open(tmp_path)
    run = again.run()
    assert run is not None
    assert (run.phase, run.attempt, run.backoff_level, run.without_progress) == (Phase.RUNNING, 2, 1, 1)
    assert run.last_exit == ExitStatus(signal=9)
    first, _second = again.attempts()
    assert (first.pid, first.identity, first.cause, first.status) == (
        1234,
        "boot:1234:99",
        Cause.CRASH,
        ExitStatus(signal=9),
    )
    assert first.detail == "last output: boom"
    unfinished = again.unfinished_attempt()
    assert unfinished is not None
    assert unfinished.n == 2
    assert unfinished.marker == "r:2:bb"
    assert [e.kind for e in again.events()] == ["launched"]


def replace_exit(state: State) -> State:
    from dataclasses import replace

    return replace(state, last_exit=ExitStatus(signal=9))


def test_uncommitted_writes_are_not_visible_after_a_crash(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path)
    save(ledger, State(phase=Phase.RUNNING, attempt=1))
    ledger.begin_attempt(2, 1.0, "m")  # never committed: the process "dies" here
    reader = Ledger.open_readonly(tmp_path)
    assert reader is not None
    assert [a.n for a in reader.attempts()] == []
    run = reader.run()
    assert run is not None
    assert run.attempt == 1


def test_wal_and_durable_commits(tmp_path: Path) -> None:
    Ledger.open(tmp_path).close()
    conn = sqlite3.connect(tmp_path / LEDGER_FILE)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_readonly_open_of_a_missing_ledger_creates_nothing(tmp_path: Path) -> None:
    assert Ledger.open_readonly(tmp_path / "state") is None
    assert not (tmp_path / "state").exists()


def test_attempts_limit_keeps_the_newest(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path)
    for n in range(1, 6):
        ledger.begin_attempt(n, float(n), f"m{n}")
    assert [a.n for a in ledger.attempts(limit=2)] == [4, 5]


def test_a_ledger_still_being_created_reads_as_not_started(tmp_path: Path) -> None:
    # The file exists before its tables do (a supervisor is opening it right now).
    sqlite3.connect(tmp_path / LEDGER_FILE).execute("PRAGMA journal_mode=WAL").close()
    assert Ledger.open_readonly(tmp_path) is None


def test_older_ledgers_gain_the_new_columns(tmp_path: Path) -> None:
    Ledger.open(tmp_path).close()
    conn = sqlite3.connect(tmp_path / LEDGER_FILE)
    for table, column in (("run", "best_step"), ("run", "progressed"), ("checkpoints", "ctime_ns")):
        conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    conn.commit()
    conn.close()
    Ledger.open(tmp_path).close()
    conn = sqlite3.connect(tmp_path / LEDGER_FILE)
    assert {"best_step", "progressed"} <= {row[1] for row in conn.execute("PRAGMA table_info(run)")}
    assert "ctime_ns" in {row[1] for row in conn.execute("PRAGMA table_info(checkpoints)")}


@pytest.mark.slow
def test_a_busy_ledger_is_an_error_never_damaged(tmp_path: Path) -> None:
    # Locked by another writer is not lost: the advice to start a new ledger (and set
    # this one aside) would be wrong, and nothing may be set aside.
    import pytest

    from supervisor.ledger import LedgerDamaged, LedgerError

    Ledger.open(tmp_path).close()
    (tmp_path / "quarantine").mkdir()
    (tmp_path / "quarantine" / "G_1.pth").write_bytes(b"kept")  # the run's history beside it
    holder = sqlite3.connect(tmp_path / LEDGER_FILE, timeout=0)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(LedgerError) as raised:
            Ledger.open(tmp_path)
        assert not isinstance(raised.value, LedgerDamaged), raised.value
        assert "--new-ledger" not in str(raised.value)
    finally:
        holder.rollback()
        holder.close()
    assert not list(tmp_path.glob("*damaged*")), "nothing set aside"
    reopened = Ledger.open(tmp_path)
    reopened.close()
