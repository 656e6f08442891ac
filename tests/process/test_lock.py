from __future__ import annotations

import os
from pathlib import Path

import pytest

from supervisor.process.lock import AlreadyRunning, RunLock, holder_pid


def test_one_holder_at_a_time_and_asking_never_takes_the_lock(tmp_path: Path) -> None:
    first = RunLock(tmp_path)
    assert holder_pid(first.path) is None  # no lock file yet
    first.acquire()
    assert holder_pid(first.path) == os.getpid()
    second = RunLock(tmp_path)
    with pytest.raises(AlreadyRunning) as info:
        second.acquire()
    assert info.value.pid == os.getpid()
    assert "already running this run" in str(info.value)
    first.release()
    assert holder_pid(first.path) is None
    for _ in range(3):  # probing a free lock leaves it free
        assert holder_pid(first.path) is None
        second.acquire()
        second.release()


def test_the_lock_file_keeps_its_name_on_disk(tmp_path: Path) -> None:
    # A supervisor of an older version may hold it: another name would let two run one run.
    lock = RunLock(tmp_path)
    lock.acquire()
    try:
        assert (tmp_path / "supervisor.lock").exists()
        assert holder_pid(tmp_path / "supervisor.lock") == os.getpid()
    finally:
        lock.release()
