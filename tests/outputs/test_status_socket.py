"""The live status socket: private to the supervisor's user (file mode and SO_PEERCRED,
with a real process of another uid where the tests run as root), one JSON document per
connection, and never in supervision's way."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from supervisor.outputs import status_fetch as live
from supervisor.outputs import status_socket
from supervisor.outputs.status_fetch import LiveUnavailable, fetch
from supervisor.outputs.status_socket import LiveStatusServer, Snapshot, peer_allowed
from tests.support.load import scaled
from tests.support.procs import behave, read_pid, wait_for

pytestmark = pytest.mark.timeout(60)
CLI = [sys.executable, "-m", "supervisor.cli"]
NOBODY = 65534


def snapshot(**changes: Any) -> Snapshot:
    values: dict[str, Any] = {
        "run": "r",
        "phase": "running",
        "attempt": 2,
        "supervisor_pid": os.getpid(),
        "started_at": 1_700_000_000.0,
        "uptime_s": 12.5,
        "trainer_pid": 4242,
        "last_progress_age_s": 0.25,
        "last_progress_sign": "heartbeat",
        "best_step": 300,
        "next_relaunch_in_s": None,
        "next_backoff_s": 20.0,
        "attempts_without_progress": 1,
        "last_cause": "crash",
        "restarts_by_cause": {"crash": 1},
    }
    return Snapshot(**{**values, **changes})


def serving(
    directory: Path, make: Callable[[], Snapshot], body: Callable[[LiveStatusServer], Awaitable[None]]
) -> None:
    """Run `body` while a LiveStatusServer serves `make()` on `directory`."""

    async def main() -> None:
        server = LiveStatusServer(directory, make)
        await server.start()
        try:
            await asyncio.wait_for(body(server), scaled(30))
        finally:
            await server.stop()

    asyncio.run(main())


async def fetched(directory: Path) -> dict[str, Any]:
    return await asyncio.to_thread(fetch, directory, 5.0)


def test_only_the_supervisors_own_user_and_root_are_answered() -> None:
    assert peer_allowed(1000, own_uid=1000)
    assert peer_allowed(0, own_uid=1000), "root reads the ledger and /proc anyway"
    assert not peer_allowed(1001, own_uid=1000)
    assert not peer_allowed(NOBODY, own_uid=0)


def test_one_document_per_connection_from_a_0600_socket_removed_at_stop(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    seen: list[Any] = []

    async def body(server: LiveStatusServer) -> None:
        path = directory / live.SOCKET_NAME
        seen.append(stat.S_IMODE(path.stat().st_mode))
        seen.append(stat.S_ISSOCK(path.stat().st_mode))
        seen.append(await fetched(directory))
        seen.append(sorted(p.name for p in directory.iterdir()))

    serving(directory, snapshot, body)
    mode, is_socket, document, files = seen
    assert (mode, is_socket) == (0o600, True)
    assert document == json.loads(snapshot().to_json())
    assert files == [live.SOCKET_NAME], "nothing left of the staging directory"
    assert not (directory / live.SOCKET_NAME).exists()


def test_a_stale_socket_is_replaced_and_a_long_state_dir_works(tmp_path: Path) -> None:
    directory = tmp_path / ("d" * 120)
    directory.mkdir()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with live.unix_address(directory / live.SOCKET_NAME) as address:
        stale.bind(address)  # left by a supervisor that died: nobody accepts on it
    stale.close()
    (directory / f"{status_socket.STAGING_PREFIX}left").mkdir()  # a staging folder a crash left
    documents: list[dict[str, Any]] = []

    async def body(server: LiveStatusServer) -> None:
        documents.append(await fetched(directory))

    serving(directory, lambda: snapshot(attempt=7), body)
    assert documents[0]["attempt"] == 7
    assert len(os.fsencode(directory / live.SOCKET_NAME)) > live.UNIX_PATH_MAX
    assert list(directory.iterdir()) == []


def test_a_failing_snapshot_is_logged_once_and_the_next_client_is_answered(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[int] = []

    def flaky() -> Snapshot:
        calls.append(1)
        if len(calls) <= 2:
            raise RuntimeError("snapshot broke")
        return snapshot()

    outcomes: list[str] = []
    errors: list[int] = []

    async def body(server: LiveStatusServer) -> None:
        for _ in range(3):
            try:
                outcomes.append((await fetched(tmp_path))["phase"])
            except LiveUnavailable as exc:
                outcomes.append(str(exc))
        errors.append(server.errors.count)

    serving(tmp_path, flaky, body)
    assert outcomes[:2] == ["the supervisor closed the connection without answering (another user?)"] * 2
    assert outcomes[2] == "running"
    assert errors == [2]
    assert capsys.readouterr().out.count("error while serving the live status") == 1


@pytest.mark.slow
def test_a_client_that_never_reads_is_cut_off_while_others_are_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(status_socket, "WRITE_TIMEOUT_S", 0.2)
    huge = snapshot(restarts_by_cause={f"cause-{n}": n for n in range(100_000)})  # > the socket buffer
    path = str(tmp_path / live.SOCKET_NAME)
    got: list[int] = []

    async def body(server: LiveStatusServer) -> None:
        stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stuck.connect(path)  # and reads nothing, for now
        other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        other.connect(path)
        got.append(len(await asyncio.to_thread(read_until_closed, other)))
        while server.dropped == 0:
            await asyncio.sleep(0.01)
        got.append(len(await asyncio.to_thread(read_until_closed, stuck)))

    serving(tmp_path, lambda: huge, body)
    full = len(huge.to_json())
    assert got[0] == full, "a reading client gets the whole document meanwhile"
    assert got[1] < full, "the one that did not read was cut off"


def read_until_closed(sock: socket.socket) -> bytes:
    sock.settimeout(scaled(10))
    chunks = []
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(1 << 20):
            chunks.append(chunk)
    sock.close()
    return b"".join(chunks)


# --- the real supervisor, and a real process of another user ----------------------------


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory another user may traverse (pytest's own tmp_path is 0700)."""
    directory = Path(tempfile.mkdtemp(prefix="ts-live-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def connect_as(uid: int, path: Path) -> str:
    """What a process of `uid` gets from the socket: 'answered', 'refused' (closed without
    a word) or the error's name. Forked, it drops its privileges before connecting."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        outcome = "child failed"
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            outcome = _try_to_read(path)
        finally:
            os.write(write_end, outcome.encode())
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        outcome = pipe.read().decode()
    os.waitpid(pid, 0)
    return outcome


def _try_to_read(path: Path) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        try:
            sock.connect(str(path))
            data = sock.recv(65536)
        except ConnectionResetError:
            return "refused"
        except OSError as exc:
            return type(exc).__name__
    return "answered" if data else "refused"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another uid (setuid)")
@pytest.mark.slow
def test_the_status_socket_refuses_other_users(shared_dir: Path) -> None:
    state = shared_dir / "state"
    pid_file = shared_dir / "trainer.pid"
    config = shared_dir / "run.toml"
    config.write_text(
        f"[run]\ncommand = {json.dumps(behave('sleep', str(pid_file)))}\nstate_dir = {json.dumps(str(state))}\n"
    )
    out = shared_dir / "supervisor.log"
    with out.open("wb") as log:
        sup = subprocess.Popen([*CLI, "run", "-c", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: read_pid(pid_file), what="the trainer")
        path = state / live.SOCKET_NAME
        wait_for(path.exists, what="the status socket")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(state.stat().st_mode) & 0o005 == 0o005, "others may reach the socket file"
        assert connect_as(NOBODY, path) == "PermissionError", "the mode keeps other users out"
        assert connect_as(os.geteuid(), path) == "answered"
        path.chmod(0o666)  # had the mode been wider, the peer's uid still decides
        assert connect_as(NOBODY, path) == "refused"
        assert fetch(state, 5.0)["phase"] == "running", "supervision and the socket go on"
    finally:
        sup.terminate()
        assert sup.wait(timeout=scaled(30)) == 0
    assert "refused a live status client of another user" in out.read_text()
    assert not path.exists()
