"""The heartbeat channel: the trainer-side client against real Unix datagram sockets,
and the supervisor-side receiver."""

from __future__ import annotations

import asyncio
import math
import os
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from supervisor import client
from supervisor.client import ATTEMPT_MARKER_ENV, HEARTBEAT_ENV, heartbeat, heartbeat_enabled
from supervisor.process.sessions import ATTEMPT_MARKER_ENV as PROCESS_MARKER_ENV
from supervisor.signals.heartbeats import Beat, HeartbeatServer, parse_beat
from tests.support.load import scaled

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parents[2]
MARKER = "run:3:0badcafe"
NAN = float("nan")


@pytest.fixture
def point_client(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Path], None]]:
    """Point this process's client at a socket path, as the supervisor's environment would."""

    def point(path: Path) -> None:
        monkeypatch.setenv(HEARTBEAT_ENV, str(path))
        monkeypatch.setenv(ATTEMPT_MARKER_ENV, MARKER)
        client._forget()

    yield point
    client._forget()


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[socket.socket]:
    """A plain datagram socket in place of the supervisor (tmp_path/r.sock)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "r.sock"))
    sock.settimeout(10)
    yield sock
    sock.close()


def drain(sock: socket.socket) -> list[bytes]:
    sock.setblocking(False)
    datagrams = []
    try:
        while True:
            datagrams.append(sock.recv(4096))
    except BlockingIOError:
        return datagrams
    finally:
        sock.settimeout(10)


def run(body: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(body(), scaled(20))

    asyncio.run(bounded())


async def arrived(beats: list[Beat], count: int) -> None:
    while len(beats) < count:
        await asyncio.sleep(0.01)


# --- wire format -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "step", "loss"),
    [
        (b"m\t5\t0.5", 5, 0.5),
        (b"m\t-\t-", None, None),
        (b"m\t0\t1e-05", 0, 1e-05),
        (b"m\t7\tinf", 7, math.inf),
        (b"m\t7\t-inf", 7, -math.inf),
    ],
)
def test_parse_beat_reads_step_and_loss(data: bytes, step: int | None, loss: float | None) -> None:
    assert parse_beat(data, 1.5) == Beat("m", step, loss, 1.5)


def test_parse_beat_reads_nan_and_a_marker_with_a_tab() -> None:
    beat = parse_beat(b"a\tb\t3\tnan", 0.0)
    assert beat is not None
    assert beat.marker == "a\tb"
    assert beat.step == 3
    assert beat.loss is not None
    assert math.isnan(beat.loss)


@pytest.mark.parametrize("data", [b"", b"m", b"m\t5", b"m\tfive\t1.0", b"m\t5\tlow", b"\xff\t1\t1.0"])
def test_parse_beat_rejects_malformed_datagrams(data: bytes) -> None:
    assert parse_beat(data, 0.0) is None


def test_client_and_process_agree_on_the_marker_variable() -> None:
    assert ATTEMPT_MARKER_ENV == PROCESS_MARKER_ENV


# --- client ----------------------------------------------------------------------------


def test_without_the_environment_a_beat_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(HEARTBEAT_ENV, raising=False)
    client._forget()
    heartbeat(step=1, loss=NAN)
    assert not heartbeat_enabled()
    assert client._sock is None


def test_wire_format_with_floatable_and_broken_values(
    point_client: Callable[[Path], None], receiver: socket.socket, tmp_path: Path
) -> None:
    class Scalar:  # like a 0-d tensor
        def __float__(self) -> float:
            return 2.5

    class Broken:
        def __float__(self) -> float:
            raise RuntimeError("no")

        def __int__(self) -> int:
            raise RuntimeError("no")

    point_client(tmp_path / "r.sock")
    assert heartbeat_enabled()
    heartbeat(step=1, loss=Scalar())
    assert receiver.recv(4096) == f"{MARKER}\t1\t2.5".encode()
    client._send(Broken(), Broken())
    assert receiver.recv(4096) == f"{MARKER}\t-\t-".encode()
    client._send(None, -math.inf)
    assert receiver.recv(4096) == f"{MARKER}\t-\t-inf".encode()


def test_rate_limit_sends_the_first_beat_and_a_nan_at_once(
    point_client: Callable[[Path], None],
    receiver: socket.socket,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [100.0]
    monkeypatch.setattr(client, "_now", lambda: now[0])
    point_client(tmp_path / "r.sock")
    calls = [(1, 100.0, 1.0), (2, 100.1, 0.9), (3, 100.2, NAN), (4, 100.3, 0.8), (5, 100.5, 0.7)]
    for step, at, loss in calls:
        now[0] = at
        heartbeat(step=step, loss=loss)
    assert [receiver.recv(4096) for _ in range(3)] == [
        f"{MARKER}\t1\t1.0".encode(),
        f"{MARKER}\t3\tnan".encode(),  # at once, though 0.2 s after the first
        f"{MARKER}\t5\t0.7".encode(),  # MIN_INTERVAL_S after the nan, the latest values
    ]
    assert drain(receiver) == []


def test_two_quick_calls_send_one_datagram(
    point_client: Callable[[Path], None],
    receiver: socket.socket,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(client, "MIN_INTERVAL_S", 60.0)  # "quick", however slow the machine
    point_client(tmp_path / "r.sock")
    heartbeat(step=1, loss=1.0)
    heartbeat(step=2, loss=1.0)
    assert receiver.recv(4096) == f"{MARKER}\t1\t1.0".encode()
    assert drain(receiver) == []


def test_nobody_listening_is_harmless(point_client: Callable[[Path], None], tmp_path: Path) -> None:
    point_client(tmp_path / "missing.sock")
    for step in range(100):
        heartbeat(step=step, loss=NAN)
    client._send(1, 1.0)
    assert heartbeat_enabled()


@pytest.mark.timeout(10)
def test_a_full_receiver_queue_neither_blocks_nor_raises(
    point_client: Callable[[Path], None], receiver: socket.socket, tmp_path: Path
) -> None:
    point_client(tmp_path / "r.sock")
    sends = 5000
    for step in range(sends):
        heartbeat(step=step, loss=NAN)  # nan: each one bypasses the rate limit
    delivered = drain(receiver)
    assert delivered  # the receiver was real
    assert len(delivered) < sends  # and its queue did fill up


def test_a_child_process_beats_with_its_own_marker(receiver: socket.socket, tmp_path: Path) -> None:
    env = {**os.environ, HEARTBEAT_ENV: str(tmp_path / "r.sock"), ATTEMPT_MARKER_ENV: "run:7:feed"}
    code = "from supervisor.client import heartbeat; heartbeat(step=3, loss=1.5)"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, timeout=scaled(20))
    assert receiver.recv(4096) == b"run:7:feed\t3\t1.5"


def test_a_forked_child_makes_its_own_socket_and_beats_at_once(
    point_client: Callable[[Path], None], receiver: socket.socket, tmp_path: Path
) -> None:
    point_client(tmp_path / "r.sock")
    heartbeat(step=1, loss=1.0)  # the parent's socket exists, and its rate limit runs
    parent_sock = client._sock
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            heartbeat(step=2, loss=2.0)
            status = 0 if client._sock is not parent_sock and client._sock_pid == os.getpid() else 3
        finally:
            os._exit(status)
    _, wait_status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(wait_status) == 0
    assert receiver.recv(4096) == f"{MARKER}\t1\t1.0".encode()
    assert receiver.recv(4096) == f"{MARKER}\t2\t2.0".encode()


def test_importing_the_client_stays_light() -> None:
    code = (
        "import sys; import supervisor.client; "
        "heavy = ('torch', 'pydantic', 'structlog', 'asyncio', 'numpy'); "
        "print(' '.join(m for m in sys.modules if m in heavy or m.startswith('supervisor.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["supervisor.client"]


# --- receiver --------------------------------------------------------------------------


def test_client_to_receiver(point_client: Callable[[Path], None], tmp_path: Path) -> None:
    beats: list[Beat] = []
    server = HeartbeatServer(tmp_path / "state", beats.append)

    async def body() -> None:
        await server.start()
        try:
            assert server.path == tmp_path / "state" / "hb.sock"
            assert server.env() == {HEARTBEAT_ENV: str(server.path)}
            point_client(server.path)
            heartbeat(step=7, loss=0.5)
            heartbeat(step=8, loss=NAN)
            await arrived(beats, 2)
        finally:
            await server.stop()

    run(body)
    assert [(b.marker, b.step, b.loss) for b in beats[:1]] == [(MARKER, 7, 0.5)]
    assert beats[1].step == 8
    assert beats[1].loss is not None
    assert math.isnan(beats[1].loss)
    assert beats[0].at <= beats[1].at


def test_receiver_creates_a_private_directory_and_socket(tmp_path: Path) -> None:
    directory = tmp_path / "new" / "state"
    server = HeartbeatServer(directory, lambda beat: None)
    modes: list[int] = []

    async def body() -> None:
        await server.start()
        modes.extend(stat.S_IMODE(p.stat().st_mode) for p in (directory, server.path))
        await server.stop()

    run(body)
    assert modes == [0o700, 0o600]
    assert not (directory / "hb.sock").exists()
    assert server.env() == {}


def test_a_long_state_dir_falls_back_to_a_temporary_directory(
    point_client: Callable[[Path], None], tmp_path: Path
) -> None:
    directory = tmp_path / ("d" * 120)
    beats: list[Beat] = []
    server = HeartbeatServer(directory, beats.append)
    used: list[Path] = []

    async def body() -> None:
        await server.start()
        try:
            used.append(server.path.parent)
            point_client(server.path)
            heartbeat(step=1)
            await arrived(beats, 1)
        finally:
            await server.stop()

    run(body)
    (temp_dir,) = used
    assert temp_dir.name.startswith("train-supervisor-")
    assert temp_dir.parent == Path(tempfile.gettempdir())
    assert not temp_dir.exists()
    assert beats[0].step == 1


def test_a_stale_socket_is_replaced(point_client: Callable[[Path], None], tmp_path: Path) -> None:
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dead.bind(str(tmp_path / "hb.sock"))
    dead.close()  # as a killed supervisor leaves it: the file stays, nobody reads
    beats: list[Beat] = []
    server = HeartbeatServer(tmp_path, beats.append)

    async def body() -> None:
        await server.start()
        try:
            point_client(server.path)
            heartbeat(step=4, loss=0.25)
            await arrived(beats, 1)
        finally:
            await server.stop()

    run(body)
    assert beats[0].step == 4


def test_malformed_datagrams_are_counted_dropped_and_logged_once(tmp_path: Path) -> None:
    beats: list[Beat] = []
    server = HeartbeatServer(tmp_path, beats.append)

    async def body() -> None:
        await server.start()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
                for data in (b"garbage", b"\xff\xfe\t1\t2", b"m\tx\t1.0", b"m\t9\t0.5"):
                    sender.sendto(data, str(server.path))
            await arrived(beats, 1)  # datagrams keep their order: the bad ones came first
        finally:
            await server.stop()

    with capture_logs() as logs:
        run(body)
    assert [(b.marker, b.step, b.loss) for b in beats] == [("m", 9, 0.5)]
    assert server.malformed == 3
    assert [entry["log_level"] for entry in logs] == ["warning"]
