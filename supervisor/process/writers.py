"""Which processes have a file open for writing: read from /proc (every process's open
descriptors and their flags), so that a file still being written is never moved away
from under its writer. Best effort: processes we may not inspect are not seen.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
WRITE_MODES = (os.O_WRONLY, os.O_RDWR)


@dataclass(frozen=True)
class Writer:
    pid: int
    command: str

    def describe(self) -> str:
        return f"pid {self.pid} ({self.command})"


def writers_of(paths: Iterable[Path], proc: Path = PROC) -> dict[Path, list[Writer]]:
    """For each of `paths` that some process holds open for writing, those processes."""
    wanted: dict[tuple[int, int], Path] = {}
    for path in paths:
        with contextlib.suppress(OSError):
            st = os.lstat(path)
            wanted[(st.st_dev, st.st_ino)] = path
    found: dict[Path, list[Writer]] = {}
    if not wanted:
        return found
    me = os.getpid()
    for entry in _pids(proc):
        if entry == me:
            continue
        for path in _written_by(proc / str(entry), wanted):
            found.setdefault(path, []).append(Writer(entry, command_line(entry, proc)))
    return found


def _pids(proc: Path) -> list[int]:
    try:
        return [int(name) for name in os.listdir(proc) if name.isdigit()]
    except OSError:
        return []


def _written_by(pid_dir: Path, wanted: dict[tuple[int, int], Path]) -> set[Path]:
    hits: set[Path] = set()
    try:
        fds = os.listdir(pid_dir / "fd")
    except OSError:
        return hits
    for fd in fds:
        try:
            st = os.stat(pid_dir / "fd" / fd)  # follows the magic link to the open file
        except OSError:
            continue
        path = wanted.get((st.st_dev, st.st_ino))
        if path is not None and _open_for_writing(pid_dir / "fdinfo" / fd):
            hits.add(path)
    return hits


def _open_for_writing(fdinfo: Path) -> bool:
    try:
        text = fdinfo.read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags:"):
            return (int(line.split()[1], 8) & os.O_ACCMODE) in WRITE_MODES
    return False


def command_line(pid: int, proc: Path = PROC) -> str:
    """A process's command line, shortened, as it may be shown ("?" where unreadable)."""
    try:
        raw = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return "?"
    return " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part)[:160] or "?"
