"""Reading the live status: one connection to `<state_dir>/status.sock`, one JSON object
back. The client's half only, so that `train-supervisor status` loads no server (asyncio)
and no logging."""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SOCKET_NAME = "status.sock"
UNIX_PATH_MAX = 107  # sun_path holds 108 bytes, the terminating NUL included
MAX_DOCUMENT_BYTES = 1 << 20


@contextlib.contextmanager
def unix_address(path: Path) -> Iterator[str]:
    """`path` as AF_UNIX can take it: through /proc/self/fd where it is longer than sun_path."""
    if len(os.fsencode(path)) <= UNIX_PATH_MAX:
        yield os.fspath(path)
        return
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


class LiveUnavailable(Exception):
    """Why the live status could not be read (str: for people)."""


def fetch(directory: Path, timeout_s: float) -> dict[str, Any]:
    """The running supervisor's Snapshot, as a dict; LiveUnavailable if there is none."""
    path = directory / SOCKET_NAME
    try:
        data = _read_all(path, timeout_s)
    except FileNotFoundError:
        raise LiveUnavailable(f"no live status socket at {path}") from None
    except PermissionError:
        raise LiveUnavailable(f"{path} belongs to another user (permission denied)") from None
    except TimeoutError:
        raise LiveUnavailable(f"the supervisor did not answer within {timeout_s:g}s") from None
    except ConnectionResetError:
        data = b""
    except OSError as exc:
        raise LiveUnavailable(f"cannot read {path}: {exc.strerror or exc}") from None
    if not data:
        raise LiveUnavailable("the supervisor closed the connection without answering (another user?)")
    try:
        document = json.loads(data)
    except ValueError:
        raise LiveUnavailable("the supervisor's answer is not JSON") from None
    if not isinstance(document, dict):
        raise LiveUnavailable("the supervisor's answer is not a JSON object")
    return document


def _read_all(path: Path, timeout_s: float) -> bytes:
    chunks: list[bytes] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock, unix_address(path) as address:
        sock.settimeout(timeout_s)
        sock.connect(address)
        received = 0
        while chunk := sock.recv(65536):
            chunks.append(chunk)
            received += len(chunk)
            if received > MAX_DOCUMENT_BYTES:
                raise OSError("the answer is too long")
    return b"".join(chunks)
