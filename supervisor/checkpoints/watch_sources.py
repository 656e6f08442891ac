"""The watcher's sources: watchdog's events turned into hints on the observer's threads, the queue overflow alarm, and the tree scan that is the truth."""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path

import structlog
from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver

from supervisor.core.file_version import FileVersion

log = structlog.get_logger("supervisor.watcher")

# watchdog reports a kernel queue overflow only as a log record from this logger.
INOTIFY_LOGGER = "watchdog.observers.inotify_c"

# No open or close-without-write events: reading a checkpoint (the validator) is silent.
TREE_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileMovedEvent,
    FileDeletedEvent,
    DirDeletedEvent,
    DirMovedEvent,
]
# DirDeletedEvent: the parent itself may go (its watch then ends) and come back.
ANCESTOR_EVENTS: list[type[FileSystemEvent]] = [DirCreatedEvent, DirMovedEvent, DirDeletedEvent]


def version_of(path: Path) -> FileVersion | None:
    """The file's version; None unless it is a regular file (symlinks are never followed)."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return FileVersion.of(st) if stat.S_ISREG(st.st_mode) else None


def scan_tree(root: Path) -> dict[Path, FileVersion]:
    """Every regular file below `root`, without following symlinks. Runs in a thread."""
    found: dict[Path, FileVersion] = {}
    stack = [root]
    while stack:
        directory = stack.pop()
        # A directory that vanishes or cannot be read is left to events and the next scan.
        with contextlib.suppress(OSError), os.scandir(directory) as entries:
            for entry in entries:
                with contextlib.suppress(OSError):
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
                    elif entry.is_file(follow_symlinks=False):
                        found[Path(entry.path)] = FileVersion.of(entry.stat(follow_symlinks=False))
    return found


def nearest_existing_parent(path: Path) -> Path:
    return next(parent for parent in path.parents if parent.is_dir())


def shutdown(observer: BaseObserver) -> None:
    observer.stop()
    if observer.is_alive():
        observer.join()


class TreeHandler(FileSystemEventHandler):
    """Turns events below one watched directory into hints. Runs on the observer thread."""

    def __init__(
        self, root: Path, real: str, hint: Callable[[str, bool], None], root_gone: Callable[[], None]
    ) -> None:
        super().__init__()
        self._root = str(root)
        self._real = real  # the watch is on the resolved path; hints name the configured one
        self._hint = hint
        self._root_gone = root_gone

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            src = os.fsdecode(event.src_path)
            if event.is_directory:
                if src == self._real:
                    self._root_gone()
            elif isinstance(event, FileMovedEvent):
                self._hint(self._configured(src), True)
                self._hint(self._configured(os.fsdecode(event.dest_path)), False)
            else:
                self._hint(self._configured(src), isinstance(event, FileDeletedEvent))
        except Exception:  # an exception here would end the observer thread
            log.exception("error handling a file event", event=repr(event))

    def _configured(self, path: str) -> str:
        if self._real == self._root:
            return path
        return os.path.join(self._root, os.path.relpath(path, self._real))


class AncestorHandler(FileSystemEventHandler):
    """Watches the nearest existing parent of a directory that does not exist yet."""

    def __init__(self, changed: Callable[[], None]) -> None:
        super().__init__()
        self._changed = changed

    def dispatch(self, event: FileSystemEvent) -> None:
        self._changed()


class OverflowAlarm(logging.Handler):
    def __init__(self, overflowed: Callable[[], None]) -> None:
        super().__init__(logging.WARNING)
        self._overflowed = overflowed

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage():
            self._overflowed()
