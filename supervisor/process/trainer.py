"""Process control: the trainer runs in its own session; we drain its output, notice
its exit at once (pidfd), stop its whole group with escalation, and make sure nothing
of its session survives before anyone relaunches (with `sessions`).

Linux only (pidfd, /proc), like the rest of the supervisor.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path

import structlog

from supervisor.core import ExitStatus
from supervisor.process.procfs import proc_identity, start_ticks
from supervisor.process.sessions import (
    ATTEMPT_MARKER_ENV,
    clear_session,
    marked_processes,
    session_members,
    signal_session,
)
from supervisor.process.trainer_log import OutputSink

log = structlog.get_logger("supervisor.process")

# Never handed to the trainer: it must not speak for the service.
STRIPPED_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")

READ_CHUNK_BYTES = 256 * 1024
DRAIN_TIMEOUT_S = 2.0  # after the session is gone: how long to wait for pipe EOF


def trainer_env(
    base: Mapping[str, str], overrides: Mapping[str, str], marker: str, *, withheld: Sequence[str] = ()
) -> dict[str, str]:
    """The trainer's environment: ours less what is withheld (the supervisor's own
    secrets, e.g. webhook tokens) and less systemd's notify socket, plus the overrides."""
    env = {name: value for name, value in base.items() if name not in withheld}
    env.update(overrides)
    for name in STRIPPED_ENV:
        env.pop(name, None)
    env["PYTHONUNBUFFERED"] = "1"
    env[ATTEMPT_MARKER_ENV] = marker
    return env


class Trainer:
    """One running attempt of the trainer."""

    def __init__(self, popen: subprocess.Popen[bytes], marker: str, sink: OutputSink) -> None:
        self.popen = popen
        self.pid = popen.pid
        self.marker = marker
        self.identity = proc_identity(self.pid)
        self.started_ticks = start_ticks(self.pid) or 0
        self._sink = sink
        self._loop = asyncio.get_running_loop()
        self._exit: asyncio.Future[int] = self._loop.create_future()
        self.exited_at: float | None = None  # loop time when the leader exited
        self.exited_before_stop = False  # it died on its own, before any stop signal
        self._eof: dict[int, asyncio.Future[None]] = {}
        self._kill_at: float | None = None
        self._kill_handle: asyncio.TimerHandle | None = None
        self._watch_exit()
        for stream, pipe in (("stdout", popen.stdout), ("stderr", popen.stderr)):
            assert pipe is not None
            self._watch_pipe(stream, pipe.fileno())

    @classmethod
    def spawn(
        cls, command: Sequence[str], cwd: Path, env: Mapping[str, str], marker: str, sink: OutputSink
    ) -> Trainer:
        """Start the trainer in a new session. OSError if it cannot be executed."""
        popen = subprocess.Popen(
            list(command),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        return cls(popen, marker, sink)

    # --- exit -----------------------------------------------------------------------

    def _watch_exit(self) -> None:
        try:
            pidfd = os.pidfd_open(self.pid)
        except OSError:  # kernels before 5.3: one waiting thread instead
            waiter = self._loop.run_in_executor(None, self.popen.wait)
            waiter.add_done_callback(lambda f: self._exit.set_result(f.result()))
            return

        def exited() -> None:
            self._loop.remove_reader(pidfd)
            os.close(pidfd)
            self._exit.set_result(self.popen.wait())

        self._loop.add_reader(pidfd, exited)

    async def wait(self, stop_signal: int, grace_s: float) -> ExitStatus:
        """The leader's exit status, returned only once no process of the session is
        left (leftovers get `stop_signal`, then SIGKILL after `grace_s`) and the output
        is drained."""
        returncode = await self._exit
        self.exited_at = self._loop.time()
        self.exited_before_stop = self._kill_at is None
        if self._kill_at is not None:  # a stop is under way: keep its deadline
            grace_s = max(0.0, self._kill_at - self._loop.time())
        leftovers = await clear_session(
            self.pid, stop_signal, grace_s, self._marked, self._kill_at is not None
        )
        if leftovers:
            log.info("cleared leftover processes of the trainer's session", count=leftovers)
        if self._kill_handle is not None:
            self._kill_handle.cancel()
        await self._drain()
        return ExitStatus.from_returncode(returncode)

    # --- stopping -------------------------------------------------------------------

    def stop(self, sig: int, grace_s: float) -> None:
        """Send `sig` to the whole session now and SIGKILL it after `grace_s`."""
        if self._exit.done() and not session_members(self.pid):
            return
        signal_session(self.pid, sig, self._marked())
        # A stopped (SIGSTOP/SIGTSTP) process acts on its signal only once continued.
        signal_session(self.pid, signal.SIGCONT, self._marked())
        if self._kill_at is None:
            self._kill_at = self._loop.time() + grace_s
            self._kill_handle = self._loop.call_later(grace_s, self.kill)

    def kill(self) -> None:
        signal_session(self.pid, signal.SIGKILL, self._marked())

    def _marked(self) -> list[int]:
        return marked_processes(self.marker, self.started_ticks)

    # --- output ---------------------------------------------------------------------

    def _watch_pipe(self, stream: str, fd: int) -> None:
        os.set_blocking(fd, False)
        eof = self._eof[fd] = self._loop.create_future()

        def readable() -> None:
            try:
                data = os.read(fd, READ_CHUNK_BYTES)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if data:
                self._sink.write(stream, data)
                return
            self._loop.remove_reader(fd)
            self._sink.close_stream(stream)
            eof.set_result(None)

        self._loop.add_reader(fd, readable)

    async def _drain(self) -> None:
        pending = [f for f in self._eof.values() if not f.done()]
        if pending:
            # A process that left the session may still hold the pipe: do not wait forever.
            await asyncio.wait(pending, timeout=DRAIN_TIMEOUT_S)
        for fd, eof in self._eof.items():
            if not eof.done():
                self._loop.remove_reader(fd)
        for pipe in (self.popen.stdout, self.popen.stderr):
            if pipe is not None:
                pipe.close()


class OutputTail:
    """The last few non-empty lines a trainer printed (for the exit record)."""

    def __init__(self, lines: int = 200) -> None:  # room for a long traceback and what follows it
        self.lines: deque[str] = deque(maxlen=lines)

    def __call__(self, stream: str, line: str) -> None:
        if line.strip():
            self.lines.append(line.rstrip())
