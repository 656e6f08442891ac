"""Host out-of-memory evidence for one attempt: did the kernel's OOM killer end it?

Two sources, both best effort and both silent when unreadable:

- the `oom_kill` count in cgroup v2 `memory.events` of the trainer's cgroup. The trainer
  inherits the supervisor's cgroup, so by default we read our own; under systemd that
  is the service unit's cgroup. `memory.events` counts kills in the cgroup and its
  descendants, by any OOM killer (the cgroup's own limit or the whole host running out).
  It says *that* something in the cgroup was killed, not which process: the supervisor
  itself and its checkpoint validator share it. Read it at launch and at exit;
- the kernel log (/dev/kmsg), which names the victim's pid, where we may read it
  (root, or CAP_SYSLOG when `kernel.dmesg_restrict` is 1). Its pids are those of the
  initial pid namespace, so it only names our trainer when we run outside a container.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog

log = structlog.get_logger("supervisor.oom")

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_ROOT = Path("/proc")
KMSG = Path("/dev/kmsg")
KMSG_READ_BYTES = 16 * 1024  # one /dev/kmsg read returns one record; it must fit
# Kernel log timestamps and CLOCK_MONOTONIC both leave out suspend time but are read
# through different clocks; keep records from a little before `since`.
KMSG_SLACK_S = 2.0


# --- cgroup v2 memory.events --------------------------------------------------------


def cgroup_v2_path(pid: int, proc_root: Path = PROC_ROOT) -> str | None:
    """The cgroup v2 path of `pid` (the "0::/path" line of /proc/<pid>/cgroup);
    None if the process is gone or has no v2 cgroup (v1-only hosts)."""
    try:
        lines = (proc_root / str(pid) / "cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("0::"):
            return line[3:]
    return None


def read_oom_kill(events_path: Path) -> int | None:
    """The `oom_kill` count of a memory.events file; None if unreadable or absent."""
    try:
        text = events_path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill" and value.strip().isdigit():
            return int(value)
    return None


class OomCounter:
    """Reads the OOM-kill count of one cgroup. The cgroup is that of `pid` (default:
    this process, whose cgroup the trainer inherits), resolved once, here; or
    `events_path` when given (a config override). `count()` is None where it cannot be
    read: cgroup v1 or hybrid hosts, no memory controller in the cgroup, the root
    cgroup (it has no memory.events), permissions."""

    def __init__(
        self,
        pid: int | None = None,
        *,
        events_path: Path | None = None,
        cgroup_root: Path = CGROUP_ROOT,
        proc_root: Path = PROC_ROOT,
    ) -> None:
        self.events_path = events_path or _events_path(pid or os.getpid(), cgroup_root, proc_root)

    def count(self) -> int | None:
        return read_oom_kill(self.events_path) if self.events_path is not None else None


def _events_path(pid: int, cgroup_root: Path, proc_root: Path) -> Path | None:
    path = cgroup_v2_path(pid, proc_root)
    return cgroup_root / path.lstrip("/") / "memory.events" if path is not None else None


def oom_kill_rose(before: int | None, after: int | None) -> bool:
    """True if the count rose between launch and exit; False when either end is unknown."""
    return before is not None and after is not None and after > before


oom_killed = oom_kill_rose


# --- the kernel log ---------------------------------------------------------------------


@dataclass(frozen=True)
class KmsgRecord:
    facility: int  # 0: the kernel itself; user space writing to /dev/kmsg gets 1 and up
    seq: int
    usec: int  # since boot, as the kernel stamps it (suspend time not counted)
    message: str  # the first line only; the " KEY=value" lines that follow are dropped


def parse_kmsg(record: str) -> KmsgRecord | None:
    """One /dev/kmsg record, "prio,seq,usec,flags[,...];message"; None if malformed."""
    header, sep, rest = record.partition(";")
    fields = header.split(",")
    if not sep or len(fields) < 4 or not all(f.isdigit() for f in fields[:3]):
        return None
    prio, seq, usec = (int(f) for f in fields[:3])
    return KmsgRecord(prio >> 3, seq, usec, message=rest.split("\n", 1)[0])


# "Out of memory: Killed process 4242 (python) total-vm:..." (also "Memory cgroup out of
# memory: ..." and "Out of memory (oom_kill_allocating_task): ..."); kernels before 5.1
# wrote "Killed process 4242 (python) total-vm:..." with no prefix.
_KILLED = re.compile(r"(?:^|: )Killed process (\d+) \(.*\) total-vm:")
# "oom-kill:constraint=...,task_memcg=/...,task=python,pid=4242,uid=1000" (kernels 4.19+)
_SUMMARY = re.compile(r"\boom-kill:constraint=.*,pid=(\d+),uid=\d+")


def parse_kmsg_oom(record: str) -> int | None:
    """The pid an OOM-killer record names as its victim; None for any other record
    (including look-alikes that user space wrote to the log)."""
    parsed = parse_kmsg(record)
    if parsed is None or parsed.facility != 0:
        return None
    match = _KILLED.search(parsed.message) or _SUMMARY.search(parsed.message)
    return int(match.group(1)) if match else None


def _records(path: Path) -> Iterator[str]:
    """Records from a kmsg-like file until there are no more (EAGAIN / EOF), oldest
    first. A record is a line plus the " KEY=value" lines after it. OSError if the
    file cannot be opened (EPERM under dmesg_restrict, missing)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        yield from _split_records(_chunks(fd))
    finally:
        os.close(fd)


def _chunks(fd: int) -> Iterator[bytes]:
    while True:
        try:
            chunk = os.read(fd, KMSG_READ_BYTES)
        except BlockingIOError:
            return
        except BrokenPipeError:  # the ring buffer overwrote records we had not read yet
            continue
        if not chunk:
            return
        yield chunk


def _split_records(chunks: Iterator[bytes]) -> Iterator[str]:
    pending: list[bytes] = []
    tail = b""
    for chunk in chunks:
        *lines, tail = (tail + chunk).split(b"\n")
        for line in lines:
            if pending and not line.startswith(b" "):
                yield _decode(pending)
                pending = []
            pending.append(line)
    if tail:
        pending.append(tail)
    if pending:
        yield _decode(pending)


def _decode(lines: list[bytes]) -> str:
    return b"\n".join(lines).decode("utf-8", "replace")


def monotonic_of_wall(wall: float) -> float:
    """A wall-clock time as CLOCK_MONOTONIC seconds. The kernel stamps its log with a
    clock that, like CLOCK_MONOTONIC, stops while suspended; CLOCK_BOOTTIME would make
    every record after a suspend look older than it is, and a fresh OOM kill be missed."""
    return wall - time.time() + time.clock_gettime(time.CLOCK_MONOTONIC)


def kernel_oom_kills(pids: Collection[int], since_wall: float, path: Path = KMSG) -> list[int]:
    """Which of `pids` the kernel log says the OOM killer killed at or after
    `since_wall` (time.time() seconds). [] where the log cannot be read."""
    since_usec = (monotonic_of_wall(since_wall) - KMSG_SLACK_S) * 1e6
    wanted = set(pids)
    killed: list[int] = []
    try:
        for record in _records(path):
            pid = parse_kmsg_oom(record)
            if pid in wanted and pid not in killed and _usec(record) >= since_usec:
                killed.append(pid)
    except OSError as e:
        log.debug("kernel log not readable", path=str(path), error=str(e))
        return []
    return killed


def _usec(record: str) -> int:
    parsed = parse_kmsg(record)
    return parsed.usec if parsed is not None else -1


# --- one attempt ------------------------------------------------------------------------


@dataclass(frozen=True)
class OomReport:
    cgroup_kills: int | None  # OOM kills in the cgroup during the attempt; None: unknown
    kernel_pids: tuple[int, ...]  # our pids the kernel log names as OOM victims

    @property
    def oom_killed(self) -> bool:
        return bool(self.kernel_pids) or bool(self.cgroup_kills)

    def describe(self) -> str:
        if self.kernel_pids:
            return f"the kernel's OOM killer killed pid {', '.join(map(str, self.kernel_pids))}"
        if self.cgroup_kills:
            return f"the OOM killer killed {self.cgroup_kills} process(es) in the service's cgroup"
        if self.cgroup_kills is None:
            return "no OOM kill found (the cgroup's OOM count is not readable here)"
        return "no OOM kill in the service's cgroup"


class OomEvidence:
    """Take at launch (reads the count then), ask `report()` after the exit."""

    def __init__(self, counter: OomCounter, kmsg_path: Path = KMSG) -> None:
        self.counter = counter
        self.kmsg_path = kmsg_path
        self.started_wall = time.time()
        self.before = counter.count()

    def report(self, pids: Collection[int]) -> OomReport:
        """Reads the count again and the kernel log for `pids` (the attempt's processes).
        Blocking file reads: from async code, call it through asyncio.to_thread."""
        after = self.counter.count()
        kills = max(0, after - self.before) if self.before is not None and after is not None else None
        found = kernel_oom_kills(pids, self.started_wall, self.kmsg_path) if pids else []
        return OomReport(cgroup_kills=kills, kernel_pids=tuple(found))
