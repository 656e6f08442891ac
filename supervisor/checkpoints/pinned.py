"""The trainer's checkpoint directory, pinned: resolved once at start and known by its
device and inode from then on, and locked, so that

- a directory swapped under the configured path (for a symbolic link to somewhere else)
  is noticed before anything is moved there: files are only ever moved through a
  descriptor of the pinned directory itself;
- a second supervisor (another config, another state_dir) on the same directory is
  refused: the lock is an flock on the directory itself, which no trainer's listing
  ever sees (no file is created for it).

The kernel drops the lock when its holder dies.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from supervisor.checkpoints import store
from supervisor.process.lock import holder_pid
from supervisor.process.writers import command_line


class DirectoryChanged(Exception):
    """The checkpoint directory is not the one pinned at start."""


class DirectoryTaken(Exception):
    """Another supervisor holds the checkpoint directory."""


class PinnedDir:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.identity: tuple[int, int] | None = None
        self.real: str | None = None
        self._lock_fd: int | None = None

    def pin(self, *, lock: bool = True) -> str | None:
        """Create the directory if it is missing, pin it and (with `lock`) lock it.
        Returns a note when the lock cannot be had on this filesystem; DirectoryTaken
        when another supervisor holds it."""
        store.make_dirs(self.path)
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        st = os.fstat(fd)
        self.identity = (st.st_dev, st.st_ino)
        self.real = os.path.realpath(self.path)
        if not lock:
            os.close(fd)
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = holder_pid(self.path)
            who = f"pid {pid}: {command_line(pid)}" if pid else "another process"
            raise DirectoryTaken(
                f"another supervisor ({who}) already watches the checkpoint directory {self.path}; "
                "two trainers writing one directory destroy each other's checkpoints"
            ) from None
        except OSError as exc:  # e.g. NFS without flock on directories
            os.close(fd)
            if exc.errno in (errno.EBADF, errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                return f"cannot lock the checkpoint directory {self.path} on this filesystem ({exc.strerror})"
            raise
        self._lock_fd = fd
        return None

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    @contextlib.contextmanager
    def opened(self) -> Iterator[int]:
        """A descriptor of the directory at the configured path now, which must be the
        pinned one (DirectoryChanged otherwise)."""
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            if self.identity is not None and (st.st_dev, st.st_ino) != self.identity:
                raise DirectoryChanged(
                    f"the checkpoint directory {self.path} is no longer the directory it was at start "
                    f"(it was {self.real}; now it is {os.path.realpath(self.path)}): nothing is moved "
                    "there. If that is intended, restart the supervisor"
                )
            yield fd
        finally:
            os.close(fd)


def open_below(root_fd: int, root: Path, directory: Path, *, create: bool = False) -> int:
    """A descriptor of `directory`, a folder below (or at) `root`, opened one component
    at a time from `root_fd` without following a symbolic link; with `create`, missing
    folders are made (a restore into a subfolder the user removed)."""
    fd = os.dup(root_fd)
    try:
        for part in directory.relative_to(root).parts:
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
            child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd
