"""What a directory entry is, told from `lstat` alone, and opening one without following
a link or blocking on it.

A checkpoint is a regular file. A symbolic link (dangling or not), a directory, a FIFO,
a socket or a device named like one is not: it is described, never read through, and
never waited on. Standard library only (the validator worker imports this too).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from enum import StrEnum
from pathlib import Path


class Kind(StrEnum):
    FILE = "file"
    SYMLINK = "symlink"
    DIRECTORY = "directory"
    FIFO = "fifo"
    SOCKET = "socket"
    DEVICE = "device"


def kind_of(mode: int) -> Kind:
    if stat.S_ISREG(mode):
        return Kind.FILE
    if stat.S_ISLNK(mode):
        return Kind.SYMLINK
    if stat.S_ISDIR(mode):
        return Kind.DIRECTORY
    if stat.S_ISFIFO(mode):
        return Kind.FIFO
    if stat.S_ISSOCK(mode):
        return Kind.SOCKET
    return Kind.DEVICE


def describe(kind: Kind, path: Path | str | None = None, *, dir_fd: int | None = None) -> str:
    """`a symbolic link (to /dev/zero)`, `a directory`, ...: why this is no checkpoint."""
    if kind is Kind.SYMLINK:
        target = None
        if path is not None:
            with contextlib.suppress(OSError):
                target = os.readlink(path, dir_fd=dir_fd)
        to = f" (to {target})" if target is not None else ""
        return f"a symbolic link{to}, not a checkpoint file (links are never followed)"
    what = {
        Kind.DIRECTORY: "a directory",
        Kind.FIFO: "a FIFO (named pipe)",
        Kind.SOCKET: "a socket",
        Kind.DEVICE: "a device file",
        Kind.FILE: "a regular file",
    }[kind]
    return f"{what}, not a checkpoint file"


class NotAFile(OSError):
    """The entry is not a regular file; `reason` says what it is."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def open_file(path: Path | str, *, dir_fd: int | None = None) -> int:
    """An O_RDONLY descriptor of the regular file at `path`: never through a symbolic link,
    never blocking (a FIFO would block an open for reading until a writer comes). Raises
    NotAFile for anything but a regular file, OSError as open(2) does."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    try:
        fd = os.open(path, flags, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):  # a link (O_NOFOLLOW), or a path through a file
            with contextlib.suppress(OSError):
                mode = os.lstat(path, dir_fd=dir_fd).st_mode
                raise NotAFile(describe(kind_of(mode), path, dir_fd=dir_fd)) from None
        raise
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise NotAFile(describe(kind_of(mode), path, dir_fd=dir_fd))
    os.set_blocking(fd, True)
    return fd
