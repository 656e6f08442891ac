"""Housekeeping: the supervisor's periodic chores, on an APScheduler (3.x) scheduler in
the daemon's event loop.

Chores look, tidy the supervisor's own files and report; none decides anything about
the trainer (that is the core's). Each runs as a coroutine in the loop (never in a
thread: the ledger belongs to the loop), at most one instance at a time, and runs
missed while the loop was busy are coalesced into one. A chore that fails is logged and
runs again next time.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from supervisor.checkpoints.store import QUARANTINE_DIR
from supervisor.checkpoints.watch_sources import nearest_existing_parent
from supervisor.config import Config

log = structlog.get_logger("supervisor")

GB = 1e9
UNLIMITED = 2**31  # APScheduler's max_instances: overlap is kept out by _logged


@dataclass(frozen=True)
class Chore:
    name: str
    every_s: float
    run: Callable[[], Awaitable[None]]


class Housekeeping:
    def __init__(self, chores: list[Chore]) -> None:
        self.chores = chores
        self._scheduler: AsyncIOScheduler | None = None

    def start(self) -> None:
        """Schedule the chores (call from inside the running event loop)."""
        if not self.chores:
            return
        # One at a time is kept by `_logged` itself: APScheduler's own limit logs a warning
        # at every overlap, and a chore outlasting its interval is normal on a busy machine.
        scheduler = AsyncIOScheduler(
            job_defaults={"coalesce": True, "max_instances": UNLIMITED, "misfire_grace_time": None}
        )
        for chore in self.chores:
            scheduler.add_job(_logged(chore), IntervalTrigger(seconds=chore.every_s), id=chore.name)
        scheduler.start()
        self._scheduler = scheduler

    def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None


def _logged(chore: Chore) -> Callable[[], Awaitable[None]]:
    """The chore, at most one run at a time (a run due while one is under way is skipped,
    said once), and never raising, not even when the shutdown cancels it."""
    running = False
    skipped = 0

    async def run() -> None:
        nonlocal running, skipped
        if running:
            skipped += 1
            if skipped == 1:
                log.info(
                    "housekeeping chore still running when due again; overlapping runs are skipped",
                    chore=chore.name,
                    every_s=chore.every_s,
                )
            return
        running = True
        try:
            await chore.run()
        except asyncio.CancelledError:
            # Only the scheduler's shutdown cancels a chore: the end of the run, not an
            # error (APScheduler would log one, with a traceback).
            log.debug("housekeeping chore cut short by the shutdown", chore=chore.name)
        except Exception:
            log.exception("housekeeping chore failed; it runs again next time", chore=chore.name)
        finally:
            running = False

    run.__name__ = chore.name
    return run


# --- disk space --------------------------------------------------------------------------


@dataclass(frozen=True)
class Space:
    what: str  # "checkpoint filesystem"
    path: Path
    free_gb: float


@dataclass
class DiskWatch:
    """Free space against a floor, said once per dip below it (and once when it is over)."""

    min_free_gb: float
    low: set[str] = field(default_factory=set)

    def check(self, spaces: list[Space], checkpoint_gb: float | None) -> list[tuple[str, str]]:
        """(level, message) for each filesystem that went below the floor or came back."""
        said = []
        for space in spaces:
            key = str(space.path)
            if space.free_gb < self.min_free_gb and key not in self.low:
                self.low.add(key)
                said.append(("warning", _low_message(space, checkpoint_gb)))
            elif space.free_gb >= self.min_free_gb and key in self.low:
                self.low.discard(key)
                said.append(("info", f"{space.free_gb:.1f} GB free again on the {space.what} ({space.path})"))
        return said


def _low_message(space: Space, checkpoint_gb: float | None) -> str:
    message = f"only {space.free_gb:.1f} GB free on the {space.what} ({space.path})"
    if checkpoint_gb:
        fits = int(space.free_gb // checkpoint_gb)
        message += f": room for about {fits} more checkpoints of {checkpoint_gb:.2f} GB"
    return message


def free_space(what: str, path: Path) -> Space | None:
    """The free space of the filesystem holding `path` (or its nearest existing parent)."""
    try:
        return Space(what, path, shutil.disk_usage(_nearest_existing(path)).free / GB)
    except OSError:
        return None


def folder_size(root: Path) -> tuple[int, int]:
    """(files, bytes) under `root`."""
    files = size = 0
    for path in root.rglob("*") if root.is_dir() else ():
        try:
            if path.is_file():
                files, size = files + 1, size + path.stat().st_size
        except OSError:
            continue
    return files, size


# --- the daemon's chores -----------------------------------------------------------------


@dataclass(frozen=True)
class Every:
    """How often each chore runs, in seconds (0 = never)."""

    rescan_s: float
    retention_s: float
    disk_check_s: float
    status_s: float


class DaemonChores:
    """The chores of one supervised run. `report(kind, level, message)` files an event
    (ledger, log, webhooks); `status()` is where the run stands, for the status line."""

    @classmethod
    def of(
        cls,
        config: Config,
        *,
        checkpoint_gb: Callable[[], float | None],
        report: Callable[[str, str, str], None],
        status: Callable[[], dict[str, Any]],
        rescan: Callable[[], Awaitable[None]] | None,
        retain: Callable[[], Awaitable[None]] | None,
    ) -> DaemonChores:
        """As the config sets them."""
        every = config.housekeeping
        return cls(
            every=Every(
                rescan_s=config.checkpoints.rescan_s,
                retention_s=every.retention_s,
                disk_check_s=every.disk_check_s,
                status_s=every.status_every_s,
            ),
            checkpoint_dir=config.adapter.checkpoint_dir,
            state_dir=config.state_dir,
            min_free_gb=config.checkpoints.min_free_gb,
            checkpoint_gb=checkpoint_gb,
            report=report,
            status=status,
            rescan=rescan,
            retain=retain,
        )

    def __init__(
        self,
        *,
        every: Every,
        checkpoint_dir: Path | None,
        state_dir: Path,
        min_free_gb: float,
        checkpoint_gb: Callable[[], float | None],
        report: Callable[[str, str, str], None],
        status: Callable[[], dict[str, object]],
        rescan: Callable[[], Awaitable[None]] | None,
        retain: Callable[[], Awaitable[None]] | None,
    ) -> None:
        self.every = every
        self.checkpoint_dir = checkpoint_dir
        self.state_dir = state_dir
        self.disk = DiskWatch(min_free_gb)
        self._checkpoint_gb = checkpoint_gb
        self._report = report
        self._status = status
        self._rescan = rescan
        self._retain = retain

    def chores(self) -> list[Chore]:
        wanted = [
            Chore("rescan", self.every.rescan_s, self._rescan) if self._rescan else None,
            Chore("retention", self.every.retention_s, self._retain) if self._retain else None,
            Chore("disk_space", self.every.disk_check_s, self.check_disk),
            Chore("status_line", self.every.status_s, self.status_line),
        ]
        return [chore for chore in wanted if chore is not None and chore.every_s > 0]

    async def check_disk(self) -> None:
        spaces = await asyncio.to_thread(self._spaces)  # (a hung network mount must not stall the loop)
        for level, message in self.disk.check(spaces, self._checkpoint_gb()):
            self._report("disk_space", level, message)

    def _spaces(self) -> list[Space]:
        places = [("state filesystem", self.state_dir)]
        if self.checkpoint_dir is not None:
            places.insert(0, ("checkpoint filesystem", self.checkpoint_dir))
        spaces = [space for what, path in places if (space := free_space(what, path)) is not None]
        if len({_device(s.path) for s in spaces}) < len(spaces):
            spaces = spaces[:1]  # one filesystem: say it once
        return spaces

    async def status_line(self) -> None:
        """One line of where the run stands; the quarantine is never emptied by us, so
        its size is part of the account."""
        files, size = await asyncio.to_thread(folder_size, self.state_dir / QUARANTINE_DIR)
        log.info("status", **self._status(), quarantined_files=files, quarantined_gb=round(size / GB, 2))


def _device(path: Path) -> int | None:
    try:
        return _nearest_existing(path).stat().st_dev
    except OSError:
        return None


def _nearest_existing(path: Path) -> Path:
    """`path`, or its nearest parent that exists (a folder not made yet)."""
    return path if path.exists() else nearest_existing_parent(path)
