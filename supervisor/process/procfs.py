"""Reading /proc: a process's stat fields, whether it is running (not a zombie), and its identity (boot id, pid, start time)."""

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


def start_ticks(pid: int) -> int | None:
    fields = stat_fields(pid)
    return int(fields[19]) if fields else None  # field 22 of stat: starttime


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown-boot"


def proc_identity(pid: int) -> str | None:
    """boot id, pid and start time (clock ticks): equal only for the very same process,
    so a pid reused after a reboot or a wrap-around is never mistaken for our trainer."""
    ticks = start_ticks(pid)
    return f"{boot_id()}:{pid}:{ticks}" if ticks is not None else None


def split_identity(identity: str) -> tuple[str, int, int]:
    """(boot id, pid, start ticks) of a proc_identity() string."""
    boot, pid, ticks = identity.rsplit(":", 2)
    return boot, int(pid), int(ticks)
