"""Reading /proc/<pid>/stat: its fields, and whether a process is running (not a zombie)."""

from __future__ import annotations

from pathlib import Path


def stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat from field 3 (state) on; None if the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()  # the name in (...) may hold spaces


def running(pid: int) -> bool:
    """In /proc and not a zombie (a zombie has exited; only its parent's wait is left)."""
    fields = stat_fields(pid)
    return fields is not None and fields[0] != "Z"
