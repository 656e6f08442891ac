"""Checkpoint validation, daemon side: the client that talks to the validator worker
(`python -m supervisor.validator.worker.serve`); the request and verdict types are in
`supervisor.validator.protocol` (and importable from here too).

The worker imports torch; this module must not, not even indirectly: the daemon stays
small and a hostile or broken checkpoint can only take down the worker. The protocol is
JSON lines over the worker's stdin/stdout, one request and one verdict per line, one job
at a time. The worker's stderr is drained into the log, never mixed into verdicts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections import deque
from dataclasses import dataclass

import structlog

from supervisor.core.file_version import NO_VERSION, FileVersion
from supervisor.process import procfs
from supervisor.process.sessions import kill_and_wait
from supervisor.validator.protocol import EMPTY as EMPTY
from supervisor.validator.protocol import ValidationRequest as ValidationRequest
from supervisor.validator.protocol import Verdict as Verdict

log = structlog.get_logger("supervisor.validation")

WORKER_MODULE = "supervisor.validator.worker.serve"
CLOSE_GRACE_S = 2.0  # after closing the worker's stdin: how long it may take to exit
KILL_WAIT_S = 5.0  # after SIGKILL: how long to wait for the kernel to reap it
PROTOCOL_LINE_LIMIT = 1 << 20
STDERR_TAIL_LINES = 20


def failed_verdict(path: str, reason: str, seconds: float, *, validator_error: bool = False) -> Verdict:
    """A rejection made without the worker's help (its version from a fresh `lstat`: a
    link is never followed)."""
    try:
        version = FileVersion.of(os.lstat(path))
    except OSError:
        version = NO_VERSION
    return Verdict(
        path=path,
        ok=False,
        reason=reason,
        step=None,
        epoch=None,
        version=version,
        checksum=None,
        format=None,
        seconds=seconds,
        validator_error=validator_error,
    )


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "validator crashed"
    if returncode < 0:
        return f"validator crashed (signal {-returncode})"
    return f"validator crashed (exit code {returncode})"


@dataclass
class _Worker:
    proc: asyncio.subprocess.Process
    stderr_reader: asyncio.Task[None]

    @property
    def running(self) -> bool:
        # asyncio notices a death only when the loop next runs; /proc knows at once, so
        # a worker killed while idle is replaced instead of failing the next job.
        return self.proc.returncode is None and procfs.running(self.proc.pid)


class ValidatorClient:
    """Owns one long-lived worker process, started on demand, restarted if it dies.

    Jobs are serialized: concurrent `validate()` calls queue. A job that outlives
    `job_timeout_s` kills the worker (its whole process group) and is rejected; the next
    call starts a fresh one. After `idle_timeout_s` without jobs the worker is stopped
    (it holds torch, a few hundred MB), so an idle client costs nothing but a timer.
    `memory_limit_mb` caps the worker's private memory (RLIMIT_DATA); mapping the
    checkpoint itself does not count against it (see the worker). The worker also dies
    with the process that started it (PR_SET_PDEATHSIG), so it is never orphaned."""

    def __init__(
        self,
        *,
        job_timeout_s: float = 600.0,
        memory_limit_mb: int | None = 4096,
        python: str = sys.executable,
        idle_timeout_s: float | None = 300.0,
    ) -> None:
        self.job_timeout_s = job_timeout_s
        self.memory_limit_mb = memory_limit_mb
        self.python = python
        self.idle_timeout_s = idle_timeout_s
        self._worker: _Worker | None = None
        self._stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self._lock = asyncio.Lock()
        self._idle_handle: asyncio.TimerHandle | None = None
        self._idle_task: asyncio.Task[None] | None = None
        self._next_id = 0

    @property
    def pid(self) -> int | None:
        """The worker's pid while it runs (it leads its own process group)."""
        worker = self._worker
        return worker.proc.pid if worker is not None and worker.proc.returncode is None else None

    def stderr_tail(self) -> list[str]:
        """The last lines the worker wrote to stderr."""
        return list(self._stderr_tail)

    async def __aenter__(self) -> ValidatorClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Start the worker now rather than on the first job: it spends seconds importing
        torch, and a checkpoint rewritten in place meanwhile would be judged too late.
        Returns at once; the import goes on in the worker."""
        async with self._lock:
            await self._running_worker()
            self._arm_idle_timer()

    async def validate(self, request: ValidationRequest) -> Verdict:
        """Judge one checkpoint. Never raises for a bad file, nor for a failing worker:
        those come back as rejections (with `validator_error` set for the latter)."""
        async with self._lock:
            self._cancel_idle_timer()
            try:
                return await self._job(request)
            finally:
                self._arm_idle_timer()

    async def close(self) -> None:
        """Stop the worker: EOF on its stdin, SIGKILL to its group if it lingers. A job
        still running gets a rejection; a later validate() starts a new worker."""
        self._cancel_idle_timer()
        worker, self._worker = self._worker, None
        if worker is None:
            return
        stdin = worker.proc.stdin
        if worker.proc.returncode is None and stdin is not None:
            stdin.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(worker.proc.wait(), CLOSE_GRACE_S)
        await self._kill(worker)

    # --- one job --------------------------------------------------------------------

    async def _job(self, request: ValidationRequest) -> Verdict:
        started = time.monotonic()

        def failed(reason: str) -> Verdict:
            return failed_verdict(request.path, reason, time.monotonic() - started, validator_error=True)

        try:
            worker = await self._running_worker()
        except OSError as exc:
            return failed(f"validator could not start: {exc}")
        proc = worker.proc
        assert proc.stdin is not None
        assert proc.stdout is not None
        self._next_id += 1
        job_id = self._next_id
        line = json.dumps({"id": job_id, "request": request.to_json()}) + "\n"
        try:
            proc.stdin.write(line.encode())
            await proc.stdin.drain()
            raw = await asyncio.wait_for(proc.stdout.readline(), self.job_timeout_s)
        except TimeoutError:
            await self._kill(worker)
            return failed(f"validation timed out after {self.job_timeout_s:g}s")
        except (OSError, ValueError) as exc:  # broken pipe; a line over the limit
            log.warning("validator protocol failure", error=str(exc))
            await self._kill(worker)
            return failed(describe_exit(proc.returncode))
        except BaseException:
            # Cancelled mid-job: the worker would answer this job to the next caller.
            await self._kill(worker)
            raise
        if not raw:
            await self._kill(worker)
            log.warning("validator died", returncode=proc.returncode, stderr=self.stderr_tail())
            return failed(describe_exit(proc.returncode))
        try:
            reply = json.loads(raw)
            if reply.get("id") != job_id:
                raise ValueError(f"answer to job {reply.get('id')} while waiting for {job_id}")
            return Verdict.from_json(reply["verdict"])
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("validator sent a bad answer", error=str(exc))
            await self._kill(worker)
            return failed("validator protocol error")

    # --- the worker process -----------------------------------------------------------

    async def _running_worker(self) -> _Worker:
        if self._worker is not None and self._worker.running:
            return self._worker
        if self._worker is not None:
            await self._kill(self._worker)  # reap the dead one and its stderr reader
        command = [self.python, "-m", WORKER_MODULE, "--serve", "--parent-pid", str(os.getpid())]
        if self.memory_limit_mb is not None:
            command += ["--memory-limit-mb", str(self.memory_limit_mb)]
        proc = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            limit=PROTOCOL_LINE_LIMIT,
        )
        self._worker = _Worker(proc, asyncio.create_task(self._drain_stderr(proc)))
        log.debug("validator started", pid=proc.pid)
        return self._worker

    async def _drain_stderr(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        while True:
            try:
                raw = await proc.stderr.readline()
            except ValueError:  # an endless line
                raw = b"(line too long)\n"
            if not raw:
                return
            text = raw.decode(errors="replace").rstrip()
            if text:
                self._stderr_tail.append(text)
                log.debug("validator stderr", pid=proc.pid, line=text)

    async def _kill(self, worker: _Worker) -> None:
        """SIGKILL the worker's process group (if it still runs) and reap it."""
        if self._worker is worker:
            self._worker = None
        proc = worker.proc
        if proc.returncode is None:
            # Its own session: the session id is its pid, and nothing else shares it.
            left = await kill_and_wait(
                proc.pid, lambda: [proc.pid] if procfs.running(proc.pid) else [], "validator"
            )
            if not left:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), KILL_WAIT_S)  # reap it
        try:
            await asyncio.wait_for(worker.stderr_reader, CLOSE_GRACE_S)
        except TimeoutError:
            worker.stderr_reader.cancel()
        if proc.stdin is not None:
            proc.stdin.close()

    # --- idling ---------------------------------------------------------------------

    def _cancel_idle_timer(self) -> None:
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None

    def _arm_idle_timer(self) -> None:
        if self.idle_timeout_s is not None and self._worker is not None:
            loop = asyncio.get_running_loop()
            self._idle_handle = loop.call_later(self.idle_timeout_s, self._idle)

    def _idle(self) -> None:
        self._idle_handle = None
        if not self._lock.locked():
            self._idle_task = asyncio.get_running_loop().create_task(self._close_idle())

    async def _close_idle(self) -> None:
        async with self._lock:
            if self._idle_handle is None:  # no job came in between
                log.debug("stopping idle validator")
                await self.close()
