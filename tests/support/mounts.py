"""Real filesystems for tests: a size-limited tmpfs (a disk that fills up, or simply
another filesystem than the test's own) and a read-only bind mount. Both need root (or
CAP_SYS_ADMIN); where a mount is refused the test is skipped, saying why."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here ({done.stderr.strip() or 'mount failed'}): needs root")


def _umount(path: Path) -> None:
    for _ in range(50):  # a process that just exited may still hold it for a moment
        if subprocess.run(["umount", str(path)], capture_output=True, check=False).returncode == 0:
            return
        subprocess.run(["sleep", "0.1"], check=False)
    subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "64m") -> Iterator[Path]:
    """A tmpfs of `size` at `path` (created): another filesystem, and one that fills up."""
    path.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path))
    try:
        yield path
    finally:
        _umount(path)


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[Path]:
    """`path` itself, bound read-only over itself: nothing in it can be removed or written."""
    _mount("--bind", str(path), str(path))
    try:
        done = subprocess.run(
            ["mount", "-o", "remount,bind,ro", str(path)], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            pytest.skip(f"cannot make a read-only bind mount here: {done.stderr.strip()}")
        yield path
    finally:
        _umount(path)
