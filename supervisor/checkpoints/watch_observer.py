"""The watcher's observer and its watches: a recursive watch on each existing directory, a watch on the nearest existing parent of a missing one, and a dead observer thread replaced."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import structlog
from watchdog.events import FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch
from watchdog.observers.polling import PollingObserver

from supervisor.checkpoints.watch_sources import (
    ANCESTOR_EVENTS,
    TREE_EVENTS,
    AncestorHandler,
    TreeHandler,
    nearest_existing_parent,
    shutdown,
)

log = structlog.get_logger("supervisor.watcher")

RECONCILE_ROUNDS = 32  # bound on chasing `mkdir -p` one level at a time


class Observed:
    """Owns the observer thread. `hint(path, deleted)` and `rescan()` are called from it."""

    def __init__(
        self,
        roots: Sequence[Path],
        hint: Callable[[str, bool], None],
        rescan: Callable[[], None],
        *,
        force_polling: bool,
        poll_interval_s: float,
    ) -> None:
        self._roots = roots
        self._hint = hint
        self.request_rescan = rescan
        self._force_polling = force_polling
        self._poll_interval_s = poll_interval_s
        self._watches: dict[tuple[str, bool], ObservedWatch] = {}  # (resolved path, recursive)
        self._unwatchable: set[tuple[str, bool]] = set()  # already logged
        self._observer = self._new_observer()

    @property
    def kind(self) -> str:
        return type(self._observer).__name__

    def start(self) -> None:
        self._observer.start()

    async def stop(self) -> None:
        # Off the loop: a polling emitter may be inside a stat of a slow network share.
        await asyncio.to_thread(shutdown, self._observer)

    def _new_observer(self) -> BaseObserver:
        if not self._force_polling:
            try:
                return Observer()
            except OSError as exc:  # e.g. fs.inotify.max_user_instances reached
                log.error("inotify unavailable; polling instead", error=str(exc))
        return PollingObserver(timeout=self._poll_interval_s)

    async def revive(self) -> None:
        """A dead observer thread is replaced (scans cover the gap)."""
        if self._observer.is_alive():
            return
        log.error("file event observer died; restarting it (scans cover the gap)")
        dead, self._observer = self._observer, self._new_observer()
        self._watches.clear()
        self._observer.start()
        await asyncio.to_thread(shutdown, dead)

    def reconcile(self) -> None:
        """A recursive watch on each existing directory; for a missing one, a watch on its
        nearest existing parent that wakes a rescan when a directory appears there."""
        wanted = self._wanted_watches()
        for _ in range(RECONCILE_ROUNDS):
            self._apply_watches(wanted)
            now_wanted = self._wanted_watches()
            if now_wanted == wanted:
                return
            wanted = now_wanted  # `mkdir -p` went on while we added watches

    def _wanted_watches(self) -> dict[tuple[str, bool], Path]:
        wanted: dict[tuple[str, bool], Path] = {}
        for root in self._roots:
            if root.is_dir():
                wanted.setdefault((os.path.realpath(root), True), root)
            else:
                wanted.setdefault((os.path.realpath(nearest_existing_parent(root)), False), root)
        return wanted

    def _apply_watches(self, wanted: dict[tuple[str, bool], Path]) -> None:
        live = {emitter.watch for emitter in list(self._observer.emitters) if emitter.is_alive()}
        for key, watch in list(self._watches.items()):
            if key not in wanted or watch not in live:  # e.g. the directory was deleted
                with contextlib.suppress(KeyError, OSError):
                    self._observer.unschedule(watch)
                del self._watches[key]
        for key, root in wanted.items():
            if key not in self._watches:
                self._schedule(key, root)

    def _schedule(self, key: tuple[str, bool], root: Path) -> None:
        path, recursive = key
        handler: FileSystemEventHandler
        if recursive:
            handler = TreeHandler(root, path, self._hint, self.request_rescan)
        else:
            handler = AncestorHandler(self.request_rescan)
            log.info("directory does not exist yet; waiting for it", directory=str(root), watching=path)
        events = TREE_EVENTS if recursive else ANCESTOR_EVENTS
        try:
            self._watches[key] = self._observer.schedule(
                handler, path, recursive=recursive, event_filter=events
            )
        except OSError as exc:  # e.g. fs.inotify.max_user_watches reached, or it just vanished
            if key not in self._unwatchable:
                self._unwatchable.add(key)
                log.warning("cannot watch directory; relying on rescans", path=path, error=str(exc))
            return
        self._unwatchable.discard(key)
