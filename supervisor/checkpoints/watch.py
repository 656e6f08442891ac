"""Notice every checkpoint file as it lands.

watchdog's events (inotify, or polling on network filesystems) are only hints: each one
marks a path as possibly changed. A file has landed once a stat on the loop shows the
same `FileVersion` (size, mtime, inode, ctime) twice, at least `quiet_s` apart and `quiet_s` after its last
event. A periodic scan of the directories (and one at start) feeds the same path, so
events lost to a queue overflow, to a network filesystem or to downtime are found too:
the directory is the truth.

Threads: the observer's threads only write into an inbox (one dict entry per path, so
a flood of modify events costs a dict update each) and wake the loop once per batch.
Directory walks run in a worker thread; everything else happens on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from supervisor.checkpoints.watch_observer import Observed
from supervisor.checkpoints.watch_sources import (
    INOTIFY_LOGGER,
    OverflowAlarm,
    scan_tree,
    version_of,
)
from supervisor.core.file_version import FileVersion

log = structlog.get_logger("supervisor.watcher")

FORCE_POLLING_ENV = "TRAIN_SUPERVISOR_FORCE_POLLING"
BATCH = 256  # paths handled between two yields to the loop
TIMER_SLACK_S = 0.001  # a quiet-period timer may fire this much early
# After taking a batch of hints, let more gather: a writer's modify events then wake the
# loop a few dozen times a second instead of thousands. Small against any quiet_s.
HINT_GATHER_S = 0.02


@dataclass(frozen=True)
class Landed:
    path: Path
    version: FileVersion


@dataclass(slots=True)
class _Pending:
    due: float  # loop time of the next stat, `quiet_s` after the last hint
    seen: FileVersion  # the previous stat


def _accept_all(path: Path) -> bool:
    return True


class CheckpointWatcher:
    """Reports each file below `directories` once it has landed, once per version.

    `on_landed` is called on the loop thread; `accept` (never called for directories)
    decides which files count. A file rewritten in place or replaced is a new version
    and is reported again; a file deleted before it landed is never reported.
    """

    def __init__(
        self,
        directories: Sequence[Path],
        on_landed: Callable[[Landed], None],
        *,
        accept: Callable[[Path], bool] = _accept_all,
        quiet_s: float = 1.0,
        rescan_s: float | None = 30.0,
        force_polling: bool = False,
        poll_interval_s: float = 1.0,
    ) -> None:
        """`rescan_s`: None = rescan only on `request_rescan()` (someone else keeps time)."""
        if min(quiet_s, poll_interval_s) <= 0 or (rescan_s is not None and rescan_s <= 0):
            raise ValueError("quiet_s, rescan_s and poll_interval_s must be positive")
        self._roots = list(dict.fromkeys(Path(os.path.abspath(d)) for d in directories))
        self._on_landed = on_landed
        self._accept = accept
        self._quiet_s = quiet_s
        self._rescan_s = rescan_s
        self._poll_interval_s = poll_interval_s
        self._force_polling = force_polling or os.environ.get(FORCE_POLLING_ENV) == "1"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = False
        self._observer: Observed | None = None
        self._overflow_alarm = OverflowAlarm(lambda: self._call_soon(self._overflowed))
        self._tasks: list[asyncio.Task[None]] = []
        # Written by the observer threads, read by the loop.
        self._lock = threading.Lock()
        self._inbox: dict[str, bool] = {}  # path -> deleted
        self._inbox_signalled = False
        # Loop only.
        self._pending: dict[Path, _Pending] = {}
        self._reported: dict[Path, FileVersion] = {}
        self._heap: list[tuple[float, int, Path, _Pending]] = []  # one entry per pending path
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._wakeup = asyncio.Event()
        self._settled = asyncio.Event()
        self._rescan_now = asyncio.Event()

    # --- public API -----------------------------------------------------------------

    async def start(self) -> None:
        """Watch the directories, scan them once, and return; existing files are then
        reported as they turn out quiet."""
        if self._loop is not None:
            raise RuntimeError("CheckpointWatcher.start() called twice")
        self._loop = asyncio.get_running_loop()
        self._observer = Observed(
            self._roots,
            self._hint,
            self.request_rescan,
            force_polling=self._force_polling,
            poll_interval_s=self._poll_interval_s,
        )
        self._observer.start()
        logging.getLogger(INOTIFY_LOGGER).addHandler(self._overflow_alarm)
        self._tasks.append(asyncio.create_task(self._work(), name="checkpoint-watcher"))
        try:
            await self._rescan()
        except BaseException:
            await self.stop()
            raise
        self._tasks.append(asyncio.create_task(self._rescan_loop(), name="checkpoint-rescan"))
        log.info(
            "watching for checkpoints",
            directories=[str(d) for d in self._roots],
            observer=self._observer.kind,
            quiet_s=self._quiet_s,
            rescan_s=self._rescan_s,
        )

    async def stop(self) -> None:
        """Stop watching; no watcher thread is left when this returns. Not restartable."""
        if self._loop is None or self._stopped:
            return
        self._stopped = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._timer is not None:
            self._timer.cancel()
        logging.getLogger(INOTIFY_LOGGER).removeHandler(self._overflow_alarm)
        if self._observer is not None:
            await self._observer.stop()

    def forget(self, path: Path) -> None:
        """Drop what is known about `path`: whatever is found under that name next is new
        (and a file still there is reported again after the next scan)."""
        path = Path(os.path.abspath(path))
        self._pending.pop(path, None)
        self._reported.pop(path, None)
        if self._is_quiet():
            self._settled.set()

    def recheck(self, path: Path) -> None:
        """Report `path` again once it has been quiet for quiet_s, changed or not."""
        path = Path(os.path.abspath(path))
        self._reported.pop(path, None)
        self._hint(str(path), False)

    def quiet(self) -> bool:
        """No file pending and no event waiting to be taken in."""
        return self._is_quiet()

    def pending(self) -> set[Path]:
        """Files seen changing that have not landed yet (events the loop has not taken in
        yet are not here; wait_quiet() waits for those too)."""
        return set(self._pending)

    async def wait_quiet(self, timeout_s: float) -> bool:
        """Wait until no file is pending and no event is unprocessed; False on timeout."""
        try:
            async with asyncio.timeout(timeout_s):
                while not self._is_quiet():
                    self._settled.clear()
                    await self._settled.wait()
        except TimeoutError:
            return False
        return True

    # --- observer side (other threads) ------------------------------------------------

    def _hint(self, path: str, deleted: bool) -> None:
        with self._lock:
            self._inbox[path] = deleted
            if self._inbox_signalled:
                return
            self._inbox_signalled = True
        self._call_soon(self._wakeup.set)

    def request_rescan(self) -> None:
        """A full rescan soon (safe from any thread)."""
        self._call_soon(self._rescan_now.set)

    def _call_soon(self, callback: Callable[[], object]) -> None:
        loop = self._loop
        if loop is None or self._stopped:
            return
        with contextlib.suppress(RuntimeError):  # the loop closed under us: shutting down
            loop.call_soon_threadsafe(callback)

    # --- hints to pending files to landed files (loop) ----------------------------------

    async def _work(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            hints = 0
            try:
                hints = await self._absorb()
                await self._check_due()
            except Exception:  # never let the watcher die silently; the next scan repairs
                log.exception("checkpoint watcher step failed")
            self._arm_timer()
            if self._is_quiet():
                self._settled.set()
            if hints:
                await asyncio.sleep(HINT_GATHER_S)

    async def _absorb(self) -> int:
        with self._lock:
            batch, self._inbox = self._inbox, {}
            self._inbox_signalled = False
        await self._apply_hints((Path(path), deleted) for path, deleted in batch.items())
        return len(batch)

    async def _apply_hints(self, hints: Iterable[tuple[Path, bool]]) -> None:
        assert self._loop is not None
        touched: set[Path] = set()
        for n, (path, deleted) in enumerate(hints, 1):
            if self._note(path, self._loop.time(), deleted):
                touched.add(path)
            if n % BATCH == 0:
                await asyncio.sleep(0)
        # One stat per path per batch, taken after its latest event: a file unchanged at
        # its deadline has then been quiet for quiet_s, so it lands after 1x quiet_s
        # rather than needing a second round.
        for n, path in enumerate(touched, 1):
            entry = self._pending.get(path)
            version = version_of(path) if entry is not None else None
            if entry is not None and version is not None:
                entry.seen = version
            if n % BATCH == 0:
                await asyncio.sleep(0)

    def _note(self, path: Path, now: float, deleted: bool) -> bool:
        """`path` may have changed (or gone, if `deleted`). True when it was already
        pending and its reference stat should be refreshed at the end of the batch."""
        entry = self._pending.get(path)
        if entry is None and not self._accepts(path):
            return False
        if entry is not None and not deleted:
            entry.due = now + self._quiet_s  # the flood path: no stat, no heap operation
            return True
        version = version_of(path)
        if version is None:
            self._pending.pop(path, None)
            self._reported.pop(path, None)
        elif entry is not None:
            entry.due = now + self._quiet_s
            entry.seen = version
        else:
            entry = self._pending[path] = _Pending(now + self._quiet_s, version)
            heapq.heappush(self._heap, (entry.due, next(self._seq), path, entry))
        return False

    async def _check_due(self) -> None:
        assert self._loop is not None
        checked = 0
        while self._heap and self._heap[0][0] <= self._loop.time() + TIMER_SLACK_S:
            _, _, path, entry = heapq.heappop(self._heap)
            if self._pending.get(path) is not entry:
                continue  # dropped or forgotten since
            if entry.due > self._loop.time() + TIMER_SLACK_S:
                heapq.heappush(self._heap, (entry.due, next(self._seq), path, entry))
                continue
            self._check(path, entry)
            checked += 1
            if checked % BATCH == 0:
                await asyncio.sleep(0)

    def _check(self, path: Path, entry: _Pending) -> None:
        assert self._loop is not None
        version = version_of(path)
        if version is None:
            del self._pending[path]
            self._reported.pop(path, None)
        elif version != entry.seen:
            entry.seen = version
            entry.due = self._loop.time() + self._quiet_s
            heapq.heappush(self._heap, (entry.due, next(self._seq), path, entry))
        else:
            del self._pending[path]
            if self._reported.get(path) != version:
                self._reported[path] = version
                self._deliver(Landed(path, version))

    def _arm_timer(self) -> None:
        assert self._loop is not None
        due = self._heap[0][0] if self._heap else None
        if self._timer is not None and self._timer.when() == due:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if due is not None:
            self._timer = self._loop.call_at(due, self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = None
        self._wakeup.set()

    def _accepts(self, path: Path) -> bool:
        try:
            return bool(self._accept(path))
        except Exception:
            log.exception("accept filter failed; ignoring the file", path=str(path))
            return False

    def _deliver(self, landed: Landed) -> None:
        log.debug("file landed", path=str(landed.path), size=landed.version.size)
        try:
            self._on_landed(landed)
        except Exception:
            log.exception("on_landed callback failed", path=str(landed.path))

    def _is_quiet(self) -> bool:
        with self._lock:
            return not self._pending and not self._inbox

    # --- scans and watches (loop) ---------------------------------------------------------

    async def _rescan_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._rescan_now.wait(), self._rescan_s)
            self._rescan_now.clear()
            try:
                await self._rescan()
            except Exception:
                log.exception("checkpoint rescan failed")

    async def _rescan(self) -> None:
        assert self._observer is not None
        await self._observer.revive()
        self._observer.reconcile()  # before the walk, so nothing lands unseen in between
        for root in self._roots:
            found = await asyncio.to_thread(scan_tree, root)
            await self._merge(root, found)
        self._wakeup.set()

    async def _merge(self, root: Path, found: dict[Path, FileVersion]) -> None:
        """Hints from a scan: files new or changed since reported, and reported files
        the scan did not find (checked by stat: they may have appeared since)."""
        changed = [p for p, i in found.items() if p not in self._pending and self._reported.get(p) != i]
        gone = [p for p in self._reported if p not in found and p.is_relative_to(root)]
        await self._apply_hints(itertools.chain(((p, False) for p in changed), ((p, True) for p in gone)))

    def _overflowed(self) -> None:
        log.warning("inotify queue overflowed: events were lost; rescanning")
        self._rescan_now.set()
