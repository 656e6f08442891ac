"""sd_notify against a real datagram socket: the notifier alone, and the real CLI run the
way systemd runs it (NOTIFY_SOCKET, WATCHDOG_USEC)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.outputs.systemd import Notifier
from tests.support.procs import behave

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def systemd_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify.sock")
    sock.bind(path)
    sock.settimeout(20)
    yield sock, path
    sock.close()


def received(sock: socket.socket) -> list[str]:
    """Every message waiting on the socket, without blocking."""
    messages = []
    sock.setblocking(False)
    try:
        while True:
            messages.append(sock.recv(4096).decode())
    except BlockingIOError:
        return messages
    finally:
        sock.settimeout(20)


def test_messages_reach_the_socket_and_nothing_happens_outside_systemd(
    systemd_socket: tuple[socket.socket, str],
) -> None:
    sock, path = systemd_socket
    notifier = Notifier({"NOTIFY_SOCKET": path})
    notifier.ready("preparing: attempt 1,\n nothing verified yet")
    notifier.watchdog()
    notifier.stopping("stopped")
    assert received(sock) == [
        "READY=1\nSTATUS=preparing: attempt 1, nothing verified yet",
        "WATCHDOG=1",
        "STOPPING=1\nSTATUS=stopped",
    ]
    quiet = Notifier({})
    assert not quiet.enabled
    quiet.ready("x")  # no socket, no error
    sock.close()
    notifier.status("systemd went away")  # never raises


def test_the_abstract_namespace_is_understood() -> None:
    name = f"train-supervisor-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    try:
        Notifier({"NOTIFY_SOCKET": "@" + name}).status("running: attempt 2")
        assert sock.recv(4096) == b"STATUS=running: attempt 2"
    finally:
        sock.close()


def test_the_watchdog_interval_is_only_for_the_process_meant() -> None:
    assert Notifier({"WATCHDOG_USEC": "4000000"}).watchdog_s == 4.0
    assert Notifier({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}).watchdog_s == 4.0
    assert Notifier({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}).watchdog_s is None
    assert Notifier({"WATCHDOG_USEC": "0"}).watchdog_s is None


@pytest.mark.slow
def test_the_supervisor_speaks_the_protocol_from_ready_to_stopping(
    tmp_path: Path, systemd_socket: tuple[socket.socket, str]
) -> None:
    sock, path = systemd_socket
    counter = tmp_path / "starts"
    config = tmp_path / "run.toml"
    command = behave("crash-until", str(counter), "2")
    config.write_text(
        f"[run]\ncommand = {command!r}\nstate_dir = {str(tmp_path / 'state')!r}\n".replace("'", '"')
        + "[restart]\nbackoff_initial_s = 0.3\nbackoff_max_s = 0.3\n"
    )
    env = {**os.environ, "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000"}
    cli = [sys.executable, "-m", "supervisor.cli", "run", "-c", str(config)]
    # Read while it runs, as systemd does: the socket's queue holds only a few datagrams.
    with subprocess.Popen(cli, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as proc:
        messages = []
        sock.settimeout(0.2)
        while proc.poll() is None:
            try:
                messages.append(sock.recv(4096).decode())
            except TimeoutError:
                continue
    messages += received(sock)
    assert proc.returncode == 0
    assert messages[0].startswith("READY=1\nSTATUS=idle: attempt 0")
    statuses = [m for m in messages if m.startswith("STATUS=")]
    assert "STATUS=running: attempt 1, nothing verified yet" in statuses
    assert "STATUS=backoff: attempt 1, nothing verified yet, last end: crash" in statuses
    told = [m for m in messages if m != "WATCHDOG=1"]
    assert told[-1] == "STOPPING=1\nSTATUS=completed: attempt 2, nothing verified yet, last end: completed"
    # Fed from the event loop every 50 ms while the run lasted (more than 0.3 s of backoff).
    assert messages.count("WATCHDOG=1") >= 3
