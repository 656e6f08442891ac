"""One supervisor per run: an exclusive flock on state_dir/supervisor.lock.

The kernel drops the lock when the holder dies, so a stale file never blocks a restart.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

LOCK_FILE = "supervisor.lock"  # the name on disk: a running older supervisor holds it


class AlreadyRunning(Exception):
    def __init__(self, path: Path, pid: int | None) -> None:
        self.path = path
        self.pid = pid
        who = f"pid {pid}" if pid else "another process"
        super().__init__(f"another supervisor ({who}) is already running this run (lock {path})")


class RunLock:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AlreadyRunning(self.path, holder_pid(self.path)) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def holder_pid(path: Path) -> int | None:
    """The pid of the supervisor holding the lock, or None if nobody holds it.

    Reads /proc/locks instead of trying the lock, so asking never makes a supervisor
    that is starting at that moment think the run is taken."""
    try:
        st = os.stat(path)
        locks = Path("/proc/locks").read_text()
    except OSError:
        return None
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in locks.splitlines():
        # e.g. "3: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF"
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[3] == "WRITE" and fields[5] == inode:
            with contextlib.suppress(ValueError):
                return int(fields[4])
    return None
