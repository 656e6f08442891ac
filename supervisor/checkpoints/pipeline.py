"""The daemon's checkpoint edge: watch the checkpoint directory, verify each file as it
lands, keep verified copies, and prepare the run directory before every launch (the
one preparation `plan --apply` uses too: supervisor/checkpoints/prepare.py).

It reports to the core only through `emit` (Progress when a file lands, dated by its
last write; CheckpointVerified), and `prepare` answers the core's Prepare action with
Prepared or PrepareFailed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from supervisor.checkpoints.from_config import book_for
from supervisor.checkpoints.on_disk import OnDisk, stat_checkpoint
from supervisor.checkpoints.plan import retention, with_content_step
from supervisor.checkpoints.prepare import Preparation
from supervisor.checkpoints.rereads import UNSETTLED_REREADS, Rereads
from supervisor.checkpoints.verdicts import Unsettled
from supervisor.checkpoints.watch import CheckpointWatcher, Landed
from supervisor.config import Config
from supervisor.core import CheckpointVerified, Event, Prepared, PrepareFailed, Progress
from supervisor.ledger import Ledger
from supervisor.outputs.reporter import Report
from trainer_adapters.base import Layout

log = structlog.get_logger("supervisor")


class CheckpointGuard:
    def __init__(
        self,
        config: Config,
        layout: Layout,
        ledger: Ledger,
        emit: Callable[[Event], None],
        *,
        attempt: Callable[[], int],
        best_step: Callable[[], int | None],
        report: Report,
        accept_model_change: bool = False,
    ) -> None:
        directory = config.adapter.checkpoint_dir
        assert directory is not None
        c = config.checkpoints
        self.config = config
        self.directory = directory
        self.layout = layout
        self.ledger = ledger
        self._emit = emit
        self._attempt = attempt
        self._best_step = best_step
        self._report = report
        self.book = book_for(config, layout, ledger, report, accept_model_change=accept_model_change)
        self._copies = asyncio.Lock()  # our verified copies: made, dropped, restored one at a time
        self.preparation = Preparation(
            config,
            layout,
            ledger,
            self.book,
            report=report,
            settle=self._settle,
            copies=self._copies,
            launches=True,
        )
        self._to_verify: asyncio.Queue[Path] = asyncio.Queue()
        self.watcher = CheckpointWatcher(
            [directory],
            self._landed,
            accept=lambda path: self._watched(path),
            quiet_s=c.quiet_s,
            rescan_s=None,  # housekeeping keeps time: see rescan()
            force_polling=c.force_polling,
        )
        self._verifying: asyncio.Task[None] | None = None
        self.rereads = Rereads()  # what is read again, decided there

    def _watched(self, path: Path) -> bool:
        if not self.layout.recursive and os.path.abspath(path.parent) != os.path.abspath(self.directory):
            return False
        return self.layout.parse(path) is not None

    def _landed(self, landed: Landed) -> None:
        """A sign of life dated by the file's last write, not by when it turned quiet."""
        self._to_verify.put_nowait(landed.path)
        age_s = max(0.0, time.time() - landed.version.mtime_ns / 1e9)
        at = asyncio.get_running_loop().time() - age_s
        self._emit(Progress(self._attempt(), "checkpoint", line=str(landed.path), at=at))

    async def start(self) -> None:
        """DirectoryTaken when another supervisor has the checkpoint directory."""
        await self.book.validator.start()  # importing torch takes seconds: start it now
        await self.preparation.start(self._attempt(), self._best_step())
        await self.watcher.start()
        self._verifying = asyncio.create_task(self._verify_landed())

    async def stop(self) -> None:
        try:
            if self._verifying is not None:
                self._verifying.cancel()
                # Not `await` under suppress(CancelledError): that would also swallow the
                # cancellation of this stop itself (the daemon bounds each edge's stop).
                await asyncio.wait({self._verifying})
            await self.watcher.stop()
        finally:
            await self.book.validator.close()  # its worker, whatever happened above
            self.preparation.stop()

    # --- housekeeping chores ---------------------------------------------------------

    async def rescan(self) -> None:
        """A full rescan of the checkpoint directory (events the OS did not deliver), and
        another try at files the validator failed on."""
        self.watcher.request_rescan()
        for key in list(self.book.errors):
            on_disk = stat_checkpoint(self.layout, Path(key[0]))
            if on_disk is None or on_disk.key != key:
                self.book.errors.pop(key, None)  # that version is gone; a newer one lands anew
            elif self.rereads.retry_failed(key):
                self._to_verify.put_nowait(on_disk.ckpt.path)

    async def retain(self) -> None:
        """Keep our verified copies to `keep_verified` (a lowered setting, a rollback)."""
        async with self._copies:
            dropped = retention(self.book.kept.snapshots(), self.book.kept.keep_verified)
            await self.book.kept.drop(dropped)
        if dropped:
            log.info("dropped verified copies beyond keep_verified", copies=len(dropped))

    # --- as files land ----------------------------------------------------------------

    async def _verify_landed(self) -> None:
        """Verify each checkpoint as it lands; keep a copy of good ones; report progress."""
        while True:
            path = await self._to_verify.get()
            try:
                await self._verify_one(path)
            except Exception:
                log.exception("error while verifying a checkpoint", path=str(path), attempt=self._attempt())
            finally:
                self._to_verify.task_done()

    async def _verify_one(self, path: Path) -> None:
        on_disk = stat_checkpoint(self.layout, path)
        if on_disk is None or not on_disk.judged:
            return
        failed_before = on_disk.key in self.book.errors
        row = await self.book.verify_landed(on_disk, attempt=self._attempt())
        if isinstance(row, Unsettled):
            self._read_again(on_disk, row)
            return
        self.rereads.judged(str(on_disk.ckpt.path))
        if row is None and not failed_before:
            reason = self.book.errors.get(on_disk.key, "validator error")
            message = f"could not verify {path}: {reason}; tried again before the next launch"
            self._report("unverifiable", "error", message)
        if row is None:
            return
        if not row.ok:
            message = f"checkpoint rejected: {path}: {row.reason}; moved aside before the next launch"
            self._report("rejected", "warning", message)
            return
        async with self._copies:
            await self.book.kept.keep(on_disk, row, self.preparation.pinned)
        # The same rule the planner resumes by: only in-place files take their content's step.
        step = with_content_step(on_disk.ckpt, row.step).step
        if step is not None and on_disk.ckpt.role in self.layout.roles:
            self._emit(CheckpointVerified(step))

    def _read_again(self, on_disk: OnDisk, unsettled: Unsettled) -> None:
        """A file caught mid-write is read again after the next quiet period (a rewrite
        that goes on lands again by itself; this covers one that ended unseen), a few
        times per version: what is still unsettled at the next launch is judged then."""
        path = str(on_disk.ckpt.path)
        reread = self.rereads.caught_mid_write(on_disk.key)
        log.info(
            "checkpoint caught while being written: read again once it is quiet",
            path=path,
            why=unsettled.reason,
            attempt=self._attempt(),
        )
        if reread.read_again:
            self.watcher.recheck(on_disk.ckpt.path)
        if reread.warn:
            message = (
                f"{path} was caught being written in each of its last {reread.versions_in_a_row} versions "
                f"({unsettled.reason}): no version of it has been verified since; if the trainer "
                "rewrites it more often than quiet_s allows, raise [checkpoints] quiet_s"
            )
            self._report("unsettled", "warning", message)

    # --- before a launch ----------------------------------------------------------------

    async def prepare(
        self, attempt: int, below_step: int | None = None, *, final: bool = False
    ) -> Prepared | PrepareFailed:
        """The run directory prepared for `attempt` (retention never drops a copy a plan
        is restoring meanwhile: the preparation holds the copies' lock); `final`: the
        finished run's directory settled, for no launch."""
        return await self.preparation.prepare(attempt, below_step, final=final)

    async def _settle(self) -> set[Path]:
        """Wait (up to verify_wait_s) for files still landing and verifications queued.
        Returns the files still changing after that: being written, never moved."""
        wait_s = self.config.checkpoints.verify_wait_s
        if not await self.watcher.wait_quiet(wait_s):
            log.warning(
                "checkpoints still being written after verify_wait_s", pending=len(self.watcher.pending())
            )
        try:
            await asyncio.wait_for(self._to_verify.join(), wait_s)
        except TimeoutError:
            log.warning("checkpoints still being verified after verify_wait_s: planning without them")
        # A verification just finished may have asked for a file caught mid-write to be
        # read again: that is not a file still being written. Let those rounds end too
        # (bounded: UNSETTLED_REREADS per version).
        for _ in range(UNSETTLED_REREADS):
            if self.watcher.quiet() or not await self.watcher.wait_quiet(wait_s):
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._to_verify.join(), wait_s)
        return self.watcher.pending()
