"""systemd's service notification protocol (sd_notify), in a few lines of socket code.

Under a `Type=notify` unit systemd passes `NOTIFY_SOCKET` (a path, or `@name` for the
abstract namespace) and, with `WatchdogSec=`, `WATCHDOG_USEC` (and `WATCHDOG_PID`, the
process meant). Outside systemd every call is a silent no-op; a failing send is never an
error of the supervisor.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Mapping

import structlog

log = structlog.get_logger("supervisor.sdnotify")


class Notifier:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self.address: str | None = None
        if address.startswith("@"):
            self.address = "\0" + address[1:]
        elif address.startswith("/"):
            self.address = address
        self.watchdog_s = _watchdog_s(env)
        self._socket: socket.socket | None = None
        self._failed = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def ready(self, status: str) -> None:
        self.send(f"READY=1\nSTATUS={_one_line(status)}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={_one_line(status)}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def stopping(self, status: str) -> None:
        self.send(f"STOPPING=1\nSTATUS={_one_line(status)}")

    def send(self, message: str) -> None:
        if self.address is None:
            return
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._socket.setblocking(False)
            self._socket.sendto(message.encode(), self.address)
        except OSError as exc:
            if not self._failed:  # said once: systemd may be restarting, or the socket gone
                log.warning("cannot notify systemd", socket=self.address, error=str(exc))
            self._failed = True
        else:
            self._failed = False

    def close(self) -> None:
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.close()
            self._socket = None


def _watchdog_s(env: Mapping[str, str]) -> float | None:
    """The watchdog interval meant for this process, if systemd set one."""
    usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(usec) / 1e6


def _one_line(text: str) -> str:
    return " ".join(text.split())[:400]
