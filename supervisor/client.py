"""Heartbeats from inside the training loop to the supervisor that launched it.

    from supervisor.client import heartbeat

    for step, batch in enumerate(loader):
        loss = train_step(batch)
        heartbeat(step=step, loss=loss)

Cheap and harmless by design:

- Outside the supervisor (TRAIN_SUPERVISOR_HEARTBEAT unset) a call does nothing.
- Rate limit: at most one datagram per MIN_INTERVAL_S. A call in between only compares the
  clock; its values are dropped, since the next call that sends carries the then-latest step
  and loss. Two kinds of call go out at once: the first one in a process, and one whose
  loss is a non-finite float (nan, inf). A loss that is not a float (a 0-d tensor) is
  converted only when a datagram is due, so a CUDA loss does not cost a device sync on
  every step; its nan then goes out with the next regular send.
- Each send is one non-blocking Unix datagram. Every error (no supervisor listening, its
  queue full, a loss that float() rejects) is swallowed: a call never raises and never
  blocks.
- Safe after os.fork and in DataLoader workers: each process makes its own socket.
- Imports only the standard library (os, socket, math, time).

Wire format, one ASCII datagram: "{marker}\\t{step or -}\\t{repr(float(loss)) or -}", where
marker is the attempt's TRAIN_SUPERVISOR_ATTEMPT; a non-finite loss reads nan, inf, -inf.
"""

from __future__ import annotations

import math
import os
import socket
import time

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: this module must stay light
    from typing import SupportsFloat, SupportsInt

HEARTBEAT_ENV = "TRAIN_SUPERVISOR_HEARTBEAT"  # path of the supervisor's datagram socket
ATTEMPT_MARKER_ENV = "TRAIN_SUPERVISOR_ATTEMPT"  # same name as supervisor.process.trainer.ATTEMPT_MARKER_ENV
MIN_INTERVAL_S = 0.25

_now = time.monotonic
_enabled: bool | None = None  # None: this process has not read its environment yet
_path = b""  # bytes: sendto then has nothing to encode
_prefix = b""  # marker + tab, ready to prepend
_sock: socket.socket | None = None
_sock_pid = 0  # the process _sock belongs to
_next_send = -math.inf  # monotonic time from which the rate limit lets a beat out


def heartbeat(step: SupportsInt | None = None, loss: SupportsFloat | None = None) -> None:
    """Tell the supervisor the training loop is alive, at `step` with `loss` (see the
    module docstring for the rate limit). Never raises, never blocks."""
    global _next_send
    if _enabled is False or (_enabled is None and not _read_env()):
        return
    now = _now()
    if now < _next_send and not (isinstance(loss, float) and not math.isfinite(loss)):
        return
    _next_send = now + MIN_INTERVAL_S
    _send(step, loss)


def heartbeat_enabled() -> bool:
    """True if this process was launched by the supervisor with heartbeats on."""
    return _enabled if _enabled is not None else _read_env()


def _read_env() -> bool:
    global _enabled, _path, _prefix
    _path = os.environb.get(HEARTBEAT_ENV.encode(), b"")
    _prefix = os.environb.get(ATTEMPT_MARKER_ENV.encode(), b"") + b"\t"
    _enabled = bool(_path)
    return _enabled


def _send(step: SupportsInt | None, loss: SupportsFloat | None) -> None:
    """One datagram now, whatever the rate limit."""
    global _sock, _sock_pid
    try:
        sock, pid = _sock, os.getpid()
        if sock is None or _sock_pid != pid:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.setblocking(False)
            _sock, _sock_pid = sock, pid
        # sendto, not connect: a restarted supervisor binds a new socket at the same path.
        sock.sendto(_prefix + _fields(step, loss), _path)
    except Exception:
        return  # nobody listening, or the queue is full: a heartbeat must not disturb training


def _fields(step: SupportsInt | None, loss: SupportsFloat | None) -> bytes:
    try:
        step_text = "-" if step is None else str(int(step))
    except Exception:
        step_text = "-"
    try:
        loss_text = "-" if loss is None else repr(float(loss))
    except Exception:
        loss_text = "-"
    return f"{step_text}\t{loss_text}".encode()


def _forget() -> None:
    """Start over, as in a new process: reread the environment, make a new socket, and
    let the next call send at once."""
    global _enabled, _sock, _next_send
    _enabled, _sock, _next_send = None, None, -math.inf


os.register_at_fork(after_in_child=_forget)
