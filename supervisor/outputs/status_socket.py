"""The live status endpoint, the server's side: `<state_dir>/status.sock`, a Unix stream socket.

A client connects and receives one JSON document (a Snapshot of the running supervisor),
then the connection closes; nothing is read from the client. Only the supervisor's own
user and root get an answer: the socket file is mode 0600 from the moment it has its
name, and every peer's uid is checked again with SO_PEERCRED (root may read the ledger
and /proc anyway, so refusing it would protect nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import struct
import tempfile
from asyncio.trsock import TransportSocket
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import structlog

from supervisor.outputs.logs import FirstErrorLog
from supervisor.outputs.status_fetch import SOCKET_NAME, unix_address

log = structlog.get_logger("supervisor.live")

STAGING_PREFIX = ".status-"
WRITE_TIMEOUT_S = 2.0  # a client that does not read gets cut off, never waited for
ROOT_UID = 0


@dataclass(frozen=True)
class Snapshot:
    """What the running supervisor knows now. Times are wall-clock seconds since the epoch;
    ages and delays are seconds, from the event loop's monotonic clock."""

    run: str
    phase: str
    attempt: int
    supervisor_pid: int
    started_at: float
    uptime_s: float
    trainer_pid: int | None
    last_progress_age_s: float | None  # the newest sign of progress (output, heartbeat, ...)
    last_progress_sign: str | None  # what it was
    best_step: int | None
    next_relaunch_in_s: float | None  # in backoff
    next_backoff_s: float  # what the next failure would wait, before jitter
    attempts_without_progress: int
    last_cause: str | None
    restarts_by_cause: dict[str, int] = field(default_factory=dict)
    version: int = 1  # of this document's layout

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode() + b"\n"


def peer_allowed(peer_uid: int, own_uid: int) -> bool:
    """Who may read the live status: the supervisor's own user, and root."""
    return peer_uid in (own_uid, ROOT_UID)


def peer_uid(sock: socket.socket | TransportSocket) -> int:
    """The uid of the process at the other end of a connected Unix socket."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


async def close_server(server: asyncio.AbstractServer, clients: set[asyncio.StreamWriter]) -> None:
    """Stop accepting, cut the clients still connected, and wait until all is closed."""
    server.close()
    for client in list(clients):
        client.transport.abort()  # (wait_closed waits for them, from Python 3.12 on)
    await server.wait_closed()


class LiveStatusServer:
    """Serves `snapshot()` on `directory`/status.sock until stop()."""

    def __init__(self, directory: Path, snapshot: Callable[[], Snapshot]) -> None:
        self.path = directory / SOCKET_NAME
        self.snapshot = snapshot
        self.refused = 0
        self.dropped = 0  # connections cut short: the client went away, or never read
        self.errors = FirstErrorLog("error while serving the live status", "supervisor.live")
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.StreamWriter] = set()
        self._inode: int | None = None

    async def start(self) -> None:
        """Never raises: without the socket, `status` reads the ledger."""
        try:
            sock = self._bind()
        except OSError as exc:
            self._remove()
            log.warning("the live status socket cannot be created", path=str(self.path), error=str(exc))
            return
        try:
            self._server = await asyncio.start_unix_server(self._serve, sock=sock)
        except OSError as exc:
            sock.close()
            self._remove()
            log.warning("the live status socket cannot be served", path=str(self.path), error=str(exc))

    async def stop(self) -> None:
        if self._server is not None:
            await close_server(self._server, self._clients)
            self._server = None
        self._remove()

    def _bind(self) -> socket.socket:
        """Bound inside a fresh 0700 directory, made 0600, then renamed onto its name: no
        other user can reach it at any moment. (Not umask: that is process-wide, and other
        threads start processes.) The rename replaces a socket left by a supervisor that
        died; the caller holds the run's lock, so no live one owns it."""
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True)
        for left in directory.glob(f"{STAGING_PREFIX}*"):
            shutil.rmtree(left, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=directory))
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            staged = staging / SOCKET_NAME
            with unix_address(staged) as address:
                sock.bind(address)
            os.chmod(staged, 0o600)
            os.replace(staged, self.path)
            self._inode = self.path.stat().st_ino
            sock.listen()
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return sock

    def _remove(self) -> None:
        """Remove the socket file, if it is still ours."""
        with contextlib.suppress(OSError):
            if self._inode is not None and self.path.stat().st_ino == self._inode:
                self.path.unlink()
        self._inode = None

    async def _serve(self, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.add(writer)
        try:
            await self._answer(writer)
        except (ConnectionError, TimeoutError):
            self.dropped += 1
            writer.transport.abort()
        except Exception:
            self.errors.exception()
            writer.transport.abort()
        finally:
            self._clients.discard(writer)

    async def _answer(self, writer: asyncio.StreamWriter) -> None:
        if not peer_allowed(peer_uid(writer.get_extra_info("socket")), os.geteuid()):
            self._refuse()
            writer.transport.abort()
            return
        writer.write(self.snapshot().to_json())
        await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT_S)
        writer.close()

    def _refuse(self) -> None:
        self.refused += 1
        if self.refused == 1:
            log.warning("refused a live status client of another user; later ones are only counted")
