"""The supervisor's end of the heartbeat channel: a Unix datagram socket that the
trainer-side client (supervisor.client) sends to; see there for the wire format."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from supervisor.client import HEARTBEAT_ENV

log = structlog.get_logger("supervisor.heartbeat")

SOCKET_NAME = "hb.sock"
UNIX_PATH_MAX = 107  # sun_path holds 108 bytes, the terminating NUL included


@dataclass(frozen=True)
class Beat:
    marker: str
    step: int | None
    loss: float | None
    at: float  # loop.time() when received


def parse_beat(data: bytes, at: float) -> Beat | None:
    """One datagram "marker<TAB>step<TAB>loss" ("-" for no value); None if malformed."""
    try:
        # rsplit: the step and loss never hold a tab; the marker, in principle, could.
        marker, step, loss = data.decode().rsplit("\t", 2)
        return Beat(marker, None if step == "-" else int(step), None if loss == "-" else float(loss), at)
    except ValueError:  # too few fields, not a number, not UTF-8
        return None


class HeartbeatServer:
    """Receives heartbeats on `directory`/hb.sock and hands each to `on_beat`.

    Where that path is too long for AF_UNIX, the socket lives in a fresh private temporary
    directory instead, removed again by stop(). Malformed datagrams are counted in
    `malformed` and dropped."""

    def __init__(self, directory: Path, on_beat: Callable[[Beat], None]) -> None:
        self.directory = directory
        self.on_beat = on_beat
        self.malformed = 0
        self._path: Path | None = None
        self._temp_dir: Path | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._closed: asyncio.Future[None] | None = None

    @property
    def path(self) -> Path:
        if self._path is None:
            raise RuntimeError("the heartbeat server is not started")
        return self._path

    def env(self) -> dict[str, str]:
        """What the trainer's environment needs to send here (nothing before start())."""
        return {} if self._path is None else {HEARTBEAT_ENV: str(self._path)}

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        sock = self._bind()
        closed = self._closed = loop.create_future()
        try:
            self._transport, _ = await loop.create_datagram_endpoint(
                lambda: _Receiver(self._received, loop.time, closed), sock=sock
            )
        except BaseException:
            sock.close()
            self._remove_files()
            raise

    async def stop(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
            assert self._closed is not None
            await self._closed
        self._remove_files()

    def _bind(self) -> socket.socket:
        path = self.directory / SOCKET_NAME
        if len(os.fsencode(path)) > UNIX_PATH_MAX:
            self._temp_dir = Path(tempfile.mkdtemp(prefix="train-supervisor-"))  # mode 0700
            path = self._temp_dir / SOCKET_NAME
        else:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # left by a supervisor that died (the state lock says none runs now)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(os.fspath(path))
            os.chmod(path, 0o600)  # not umask: that is process-wide, and other threads spawn
            sock.setblocking(False)
        except BaseException:
            sock.close()
            self._remove_files()
            raise
        self._path = path
        return sock

    def _remove_files(self) -> None:
        if self._path is not None:
            with contextlib.suppress(FileNotFoundError):
                self._path.unlink()
            self._path = None
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    def _received(self, data: bytes, at: float) -> None:
        beat = parse_beat(data, at)
        if beat is not None:
            self.on_beat(beat)
            return
        self.malformed += 1
        if self.malformed == 1:
            log.warning("malformed heartbeat dropped; later ones are only counted", datagram=data[:100])


class _Receiver(asyncio.DatagramProtocol):
    def __init__(
        self,
        received: Callable[[bytes, float], None],
        clock: Callable[[], float],
        closed: asyncio.Future[None],
    ) -> None:
        self.received = received
        self.clock = clock
        self.closed = closed

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.received(data, self.clock())

    def error_received(self, exc: Exception) -> None:
        log.debug("heartbeat socket error", error=str(exc))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
