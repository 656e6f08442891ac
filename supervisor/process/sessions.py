"""Sessions and attempts as /proc shows them: who belongs to a session or carries an attempt's marker, signalling and clearing them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Sequence
from pathlib import Path

import structlog

from supervisor.process.procfs import running, stat_fields

log = structlog.get_logger("supervisor.process")

# Environment variable that tags every process of one attempt (children inherit it),
# so a restarted supervisor can find leftovers even if they left the session.
ATTEMPT_MARKER_ENV = "TRAIN_SUPERVISOR_ATTEMPT"
SWEEP_POLL_S = 0.05  # only while clearing a session that is already being killed
KILL_WAIT_S = 5.0  # after SIGKILL: how long to wait for the kernel to remove processes


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes of session `sid`."""
    members = []
    for pid in _all_pids():
        try:
            if os.getsid(pid) == sid and running(pid):
                members.append(pid)
        except OSError:
            continue
    return members


def marked_processes(marker: str, started_since: int = 0) -> list[int]:
    """Live processes whose environment carries this attempt's marker. Only processes
    started at or after `started_since` (clock ticks, e.g. the trainer's own start) can
    be its descendants, so older ones are skipped without reading their environment."""
    needle = f"{ATTEMPT_MARKER_ENV}={marker}".encode()
    found = []
    for pid in _all_pids():
        fields = stat_fields(pid)
        if fields is None or fields[0] == "Z" or int(fields[19]) < started_since:
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.append(pid)
    return found


def signal_session(sid: int | None, sig: int, extra: Sequence[int] = ()) -> None:
    """Send `sig` to process group `sid`, to every other member of session `sid`, and to `extra`."""
    members: list[int] = []
    if sid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(sid, sig)
        members = session_members(sid)
    for pid in {*members, *extra}:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


async def clear_session(
    sid: int | None,
    sig: int,
    grace_s: float,
    extra: Callable[[], list[int]] = list,
    already_signalled: bool = False,
) -> int:
    """Stop everything left in session `sid` (plus `extra()`): `sig`, then SIGKILL after
    `grace_s`. Returns how many processes there were; logs any that would not die.

    Pass `sid=None` when the session leader is gone and its pid could have been reused:
    then only `extra()` (processes carrying the attempt marker) is touched."""

    def alive() -> list[int]:
        members = session_members(sid) if sid is not None else []
        return sorted({*members, *extra()})

    loop = asyncio.get_running_loop()
    left = alive()
    found = len(left)
    if not left:
        return 0
    if not already_signalled:
        signal_session(sid, sig, left)
        signal_session(sid, signal.SIGCONT, left)
    deadline = loop.time() + grace_s
    while left and loop.time() < deadline:
        await asyncio.sleep(SWEEP_POLL_S)
        left = alive()
    if left:
        log.warning("killing leftover processes", pids=left, grace_s=grace_s)
        await kill_and_wait(sid, alive, "processes")
    return found


async def kill_and_wait(sid: int | None, alive: Callable[[], list[int]], what: str) -> list[int]:
    """SIGKILL session `sid` and `alive()`, then wait up to KILL_WAIT_S for the kernel to
    remove them. Returns (and logs) what survived: a process in uninterruptible I/O."""
    loop = asyncio.get_running_loop()
    left = alive()
    signal_session(sid, signal.SIGKILL, left)
    deadline = loop.time() + KILL_WAIT_S
    while left and loop.time() < deadline:
        await asyncio.sleep(SWEEP_POLL_S)
        left = alive()
    if left:
        log.error(f"{what} survived SIGKILL (uninterruptible I/O?)", pids=left)
    return left
