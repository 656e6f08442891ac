"""Process control against real child processes and real signals."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from supervisor.core import ExitStatus
from supervisor.process.procfs import proc_identity
from supervisor.process.sessions import ATTEMPT_MARKER_ENV, marked_processes, session_members
from supervisor.process.trainer import OutputTail, Trainer, trainer_env
from supervisor.process.trainer_log import OutputSink, RotatingLog
from tests.support.load import scaled
from tests.support.procs import alive, behave, read_pid

GRACE_S = 0.5


class Run:
    """A trainer spawned inside an asyncio test, with its output collected."""

    def __init__(self, tmp_path: Path, *args: str, max_bytes: int = 1 << 20, backups: int = 2) -> None:
        self.tmp_path = tmp_path
        self.args = args
        self.lines: list[tuple[str, str]] = []
        self.tail = OutputTail()
        self.log = RotatingLog(tmp_path / "logs" / "trainer.log", max_bytes, backups)
        self.sink = OutputSink(self.log, [self.tail, lambda stream, line: self.lines.append((stream, line))])

    def start(self) -> Trainer:
        env = trainer_env(os.environ, {}, marker=f"test:{self.tmp_path.name}")
        return Trainer.spawn(behave(*self.args), self.tmp_path, env, env[ATTEMPT_MARKER_ENV], self.sink)


def run_async(body: Callable[[], Awaitable[ExitStatus]]) -> ExitStatus:
    return asyncio.run(asyncio.wait_for(body(), scaled(30)))


async def until(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + scaled(timeout)
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_exit_code_and_output_are_captured(tmp_path: Path) -> None:
    run = Run(tmp_path, "exit", "1")

    async def body() -> ExitStatus:
        return await run.start().wait(signal.SIGTERM, GRACE_S)

    assert run_async(body) == ExitStatus(code=1)
    assert run.tail.lines[-1] == "exiting with 1"
    assert ("stderr", "exiting with 1") in run.lines
    assert b"behave: exit" in run.log.path.read_bytes()


@pytest.mark.parametrize(("mode", "signum"), [("sigkill", signal.SIGKILL), ("sigsegv", signal.SIGSEGV)])
def test_death_by_signal_is_reported_as_that_signal(tmp_path: Path, mode: str, signum: int) -> None:
    run = Run(tmp_path, mode)

    async def body() -> ExitStatus:
        return await run.start().wait(signal.SIGTERM, GRACE_S)

    assert run_async(body) == ExitStatus(signal=signum)


def test_trainer_gets_its_own_session_and_a_clean_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    env = trainer_env(os.environ, {"EXTRA": "1"}, marker="m")
    assert "NOTIFY_SOCKET" not in env
    smuggled = trainer_env(os.environ, {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1"}, marker="m")
    assert "NOTIFY_SOCKET" not in smuggled
    assert "WATCHDOG_USEC" not in smuggled
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["EXTRA"] == "1"
    pid_file = tmp_path / "pid"
    run = Run(tmp_path, "sleep", str(pid_file))

    async def body() -> ExitStatus:
        trainer = run.start()
        await until(pid_file.exists)
        assert os.getsid(trainer.pid) == trainer.pid != os.getsid(0)
        assert os.getpgid(trainer.pid) == trainer.pid
        environ = Path(f"/proc/{trainer.pid}/environ").read_bytes().split(b"\0")
        assert b"NOTIFY_SOCKET=/run/systemd/notify" not in environ
        assert b"PYTHONUNBUFFERED=1" in environ
        trainer.stop(signal.SIGTERM, GRACE_S)
        return await trainer.wait(signal.SIGTERM, GRACE_S)

    assert run_async(body) == ExitStatus(signal=signal.SIGTERM)


def test_a_trainer_ignoring_sigterm_is_killed_after_grace(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    run = Run(tmp_path, "ignore-term", str(ready))

    async def body() -> ExitStatus:
        trainer = run.start()
        await until(ready.exists)
        trainer.stop(signal.SIGTERM, GRACE_S)
        return await trainer.wait(signal.SIGTERM, GRACE_S)

    assert run_async(body) == ExitStatus(signal=signal.SIGKILL)
    assert ("stdout", "ignoring SIGTERM") in run.lines, "SIGTERM came first and was ignored"


@pytest.mark.parametrize(
    "flags",
    [(), ("ignore_term",), ("new_group",), ("new_group", "ignore_term"), ("new_session",)],
    ids=["same-group", "ignores-sigterm", "own-group", "own-group-ignores-sigterm", "own-session"],
)
@pytest.mark.slow
def test_stopping_leaves_no_grandchild_behind(tmp_path: Path, flags: tuple[str, ...]) -> None:
    pid_file = tmp_path / "grandchild"
    run = Run(tmp_path, "fork", str(pid_file), *flags)

    async def body() -> ExitStatus:
        trainer = run.start()
        await until(pid_file.exists)
        grandchild = read_pid(pid_file)
        assert grandchild is not None
        assert alive(grandchild)
        trainer.stop(signal.SIGTERM, GRACE_S)
        status = await trainer.wait(signal.SIGTERM, GRACE_S)
        assert not alive(grandchild)
        assert session_members(trainer.pid) == []
        return status

    assert run_async(body).signal in (signal.SIGTERM, signal.SIGKILL)


@pytest.mark.parametrize("flags", [(), ("ignore_term",), ("new_session",)])
@pytest.mark.slow
def test_leftovers_of_a_crashed_leader_are_cleared_before_wait_returns(
    tmp_path: Path, flags: tuple[str, ...]
) -> None:
    pid_file = tmp_path / "grandchild"
    run = Run(tmp_path, "fork-then-exit", str(pid_file), *flags)

    async def body() -> ExitStatus:
        trainer = run.start()
        status = await trainer.wait(signal.SIGTERM, GRACE_S)
        grandchild = read_pid(pid_file)
        assert grandchild is not None
        assert not alive(grandchild), "a relaunch must never overlap the old trainer's children"
        return status

    assert run_async(body) == ExitStatus(code=1)


def test_a_flood_of_output_never_blocks_and_the_log_rotates(tmp_path: Path) -> None:
    total = 24 * 1024 * 1024
    max_bytes = 1024 * 1024
    run = Run(tmp_path, "flood", str(total), max_bytes=max_bytes, backups=2)

    async def body() -> ExitStatus:
        return await run.start().wait(signal.SIGTERM, GRACE_S)

    assert run_async(body) == ExitStatus(code=0)
    header = len(b"behave: flood pid=\n") + len(str(os.getpid()))
    assert run.sink.bytes_seen >= total + header - 8
    logs = sorted(p.name for p in run.log.path.parent.iterdir())
    assert logs == ["trainer.log", "trainer.log.1", "trainer.log.2"]
    assert all(p.stat().st_size <= max_bytes for p in run.log.path.parent.iterdir())
    assert sum(1 for stream, _ in run.lines if stream == "stdout") > total // 1024


def test_lines_split_on_newlines_and_carriage_returns(tmp_path: Path) -> None:
    run = Run(tmp_path, "lines")

    async def body() -> ExitStatus:
        return await run.start().wait(signal.SIGTERM, GRACE_S)

    run_async(body)
    stdout = [line for stream, line in run.lines if stream == "stdout" and line]
    assert stdout[1:] == ["a", "b", "progress 1", "progress 2", "done"]


def test_a_child_that_left_the_session_gets_the_graceful_signal_too(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild"
    run = Run(tmp_path, "fork", str(pid_file), "new_session", "note_term")

    async def body() -> ExitStatus:
        trainer = run.start()
        await until(pid_file.exists)
        trainer.stop(signal.SIGTERM, 10.0)
        return await trainer.wait(signal.SIGTERM, 10.0)

    assert run_async(body) == ExitStatus(signal=signal.SIGTERM)
    assert (tmp_path / "grandchild.term").exists(), "it was asked to stop, not only SIGKILLed"


def test_marker_finds_processes_that_left_the_session(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild"
    run = Run(tmp_path, "fork", str(pid_file), "new_session")

    async def body() -> ExitStatus:
        trainer = run.start()
        await until(pid_file.exists)
        grandchild = read_pid(pid_file)
        assert grandchild not in session_members(trainer.pid)
        assert set(marked_processes(trainer.marker)) == {trainer.pid, grandchild}
        assert set(marked_processes(trainer.marker, trainer.started_ticks)) == {trainer.pid, grandchild}
        later = trainer.started_ticks + 10**9
        assert marked_processes(trainer.marker, later) == [], "processes older than the trainer are skipped"
        trainer.kill()
        return await trainer.wait(signal.SIGTERM, GRACE_S)

    assert run_async(body) == ExitStatus(signal=signal.SIGKILL)


def test_process_identity_tells_processes_apart(tmp_path: Path) -> None:
    assert proc_identity(os.getpid()) == proc_identity(os.getpid())
    assert proc_identity(os.getpid()) != proc_identity(os.getppid())
    assert proc_identity(2**22 + 1) is None


def test_a_missing_program_raises_oserror(tmp_path: Path) -> None:
    async def body() -> None:
        sink = OutputSink(None, [])
        with pytest.raises(OSError):
            Trainer.spawn([str(tmp_path / "nope")], tmp_path, dict(os.environ), "m", sink)

    asyncio.run(body())
