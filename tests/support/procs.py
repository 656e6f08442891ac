"""Child processes in tests: the scripted trainer (`behave`), waiting for a condition, liveness, pid files."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from tests.support.load import scaled

BEHAVE = Path(__file__).parent / "trainers" / "behave.py"
T = TypeVar("T")


def behave(*args: str) -> list[str]:
    """The command line of the scripted test trainer."""
    return [sys.executable, str(BEHAVE), *args]


def wait_for(predicate: Callable[[], T], timeout: float = 20.0, what: str = "condition") -> T:
    """Poll `predicate` until it returns something truthy; fail after `timeout` (an idle
    machine's seconds, stretched on a busy one)."""
    limit = scaled(timeout)
    deadline = time.monotonic() + limit
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit:.0f}s waiting for {what}")
        time.sleep(0.02)


def alive(pid: int) -> bool:
    """True if pid is a live, non-zombie process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return None
