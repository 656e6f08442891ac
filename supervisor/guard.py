"""The daemon's checkpoint edge: watch the checkpoint directory, verify each file as it
lands, keep verified copies, and prepare the run directory before every launch.

It reports to the core only through `emit` (CheckpointVerified), and `prepare` answers
the core's Prepare action with Prepared or PrepareFailed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import structlog

import trainer_adapters
from supervisor import reconcile
from supervisor.checkpoints import CheckpointBook, stat_checkpoint
from supervisor.config import Config
from supervisor.core import CheckpointVerified, Event, Prepared, PrepareFailed, Progress
from supervisor.ledger import Ledger
from supervisor.planner import Plan, retention, with_content_step
from supervisor.process import boot_id
from supervisor.validation import ValidatorClient
from supervisor.watcher import CheckpointWatcher
from trainer_adapters.base import Layout

log = structlog.get_logger("supervisor")

SUSPECT_BEFORE = "verdicts_suspect_before"  # ledger meta: verdicts older are read again
VALIDATOR_RETRIES = 3  # tries by rescans of a file the validator failed on (each launch tries too)


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
        validator = ValidatorClient(
            job_timeout_s=c.validation_timeout_s, memory_limit_mb=c.validator_memory_mb or None
        )
        self.book = CheckpointBook(
            layout=layout,
            directories=[directory],
            state_dir=config.state_dir,
            ledger=ledger,
            validator=validator,
            keep_verified=c.keep_verified,
        )
        self._to_verify: asyncio.Queue[Path] = asyncio.Queue()
        self.watcher = CheckpointWatcher(
            [directory],
            lambda landed: self._landed(landed.path),
            accept=lambda path: self._watched(path),
            quiet_s=c.quiet_s,
            rescan_s=None,  # housekeeping keeps time: see rescan()
            force_polling=c.force_polling,
        )
        self._verifying: asyncio.Task[None] | None = None
        self._retries: dict[tuple[str, int, int, int, int], int] = {}  # by housekeeping rescans
        self._copies = asyncio.Lock()  # our verified copies: made, dropped, restored one at a time

    def _watched(self, path: Path) -> bool:
        if not self.layout.recursive and os.path.abspath(path.parent) != os.path.abspath(self.directory):
            return False
        return self.layout.parse(path) is not None

    def _landed(self, path: Path) -> None:
        self._to_verify.put_nowait(path)
        self._emit(Progress(self._attempt(), "checkpoint", line=str(path)))

    async def start(self) -> None:
        await self.book.validator.start()  # importing torch takes seconds: start it now
        await self._reconcile()
        await self.watcher.start()
        self._verifying = asyncio.create_task(self._verify_landed())

    async def stop(self) -> None:
        if self._verifying is not None:
            self._verifying.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._verifying
        await self.watcher.stop()
        await self.book.validator.close()

    # --- after a crash or a power cut -----------------------------------------------

    async def _reconcile(self) -> None:
        """Clear what a crashed supervisor left half done, say what changed on disk since
        the newest state was verified, and after a reboot read that state again first.
        Advice and tidying only: an error here never keeps the supervisor from starting."""
        now = time.time()
        findings = self._after_reboot(now)
        try:
            findings += await self._tidy(now)
        except Exception:
            log.exception("could not tidy up after the last supervisor; going on")
        for finding in findings:
            self.ledger.tell(self._attempt(), finding.kind, finding.level, finding.message)

    def _after_reboot(self, now: float) -> list[reconcile.Finding]:
        """Verdicts made before a reboot may have been read from a page cache that never
        reached the disk. The time of the first start after it is kept in the ledger, so
        that a supervisor restarted before the re-reads were done still makes them."""
        current, last = boot_id(), self.ledger.meta("boot_id")
        findings = []
        if last is not None and last != current:
            self.ledger.set_meta(SUSPECT_BEFORE, repr(now))
            message = (
                "the machine restarted since the last supervisor ran: the state to resume from is read again"
            )
            findings.append(reconcile.Finding("rebooted", "info", message))
        self.ledger.set_meta("boot_id", current)
        self.ledger.commit()
        suspect_before = self.ledger.meta(SUSPECT_BEFORE)
        self.book.recheck_before = float(suspect_before) if suspect_before else None
        return findings

    async def _tidy(self, now: float) -> list[reconcile.Finding]:
        tidied = await asyncio.to_thread(
            reconcile.tidy,
            self.config.state_dir,
            [self.directory],
            lambda path: self.layout.parse(path) is not None,
            self.ledger.quarantine_destinations(),
            recursive=self.layout.recursive,
        )
        for move in tidied.found_moves:
            self.ledger.add_quarantined(now, move.original, move.moved_to, move.reason)
            message = f"found {move.moved_to} moved aside before a restart, now recorded: {move.reason}"
            tidied.findings.append(reconcile.Finding("quarantined", "warning", message))
        return tidied.findings + self._newest_state_on_disk()

    def _newest_state_on_disk(self) -> list[reconcile.Finding]:
        """The files of the newest verified state, gone or changed since verified."""
        best = self._best_step()
        if best is None:
            return []
        kept = {snap.original for snap in self.book.snapshots() if snap.step == best}
        findings = []
        for row in self.ledger.verified_at_step(best):
            path = Path(row.path)
            on_disk = stat_checkpoint(self.layout, path)
            if on_disk is None:
                then = (
                    "a verified copy goes back"
                    if path in kept
                    else "no verified copy: an older state is used"
                )
                message = f"{path} (step {best}) is gone since it was verified; {then}"
                findings.append(reconcile.Finding("verified_gone", "warning", message))
            elif self.book.known(on_disk) is None:
                message = f"{path} (step {best}) changed since it was verified; it is verified again"
                findings.append(reconcile.Finding("verified_changed", "info", message))
        return findings

    # --- housekeeping chores ---------------------------------------------------------

    async def rescan(self) -> None:
        """A full rescan of the checkpoint directory (events the OS did not deliver), and
        another try at files the validator failed on."""
        self.watcher.request_rescan()
        for key in list(self.book.errors):
            on_disk = stat_checkpoint(self.layout, Path(key[0]))
            if on_disk is None or on_disk.key != key:
                self.book.errors.pop(key, None)  # that version is gone; a newer one lands anew
            elif self._retries.get(key, 0) < VALIDATOR_RETRIES:
                self._retries[key] = self._retries.get(key, 0) + 1
                self._to_verify.put_nowait(on_disk.ckpt.path)

    async def retain(self) -> None:
        """Keep our verified copies to `keep_verified` (a lowered setting, a rollback)."""
        async with self._copies:
            dropped = retention(self.book.snapshots(), self.book.keep_verified)
            await self.book.drop(dropped)
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
                log.exception("error while verifying a checkpoint", path=str(path))
            finally:
                self._to_verify.task_done()

    async def _verify_one(self, path: Path) -> None:
        on_disk = stat_checkpoint(self.layout, path)
        if on_disk is None:
            return
        failed_before = on_disk.key in self.book.errors
        row = await self.book.verify(on_disk)
        if row is None and not failed_before:
            reason = self.book.errors.get(on_disk.key, "validator error")
            self._event(
                "unverifiable",
                "error",
                f"could not verify {path}: {reason}; tried again before the next launch",
            )
        if row is None:
            return
        if not row.ok:
            self._event(
                "rejected",
                "warning",
                f"checkpoint rejected: {path}: {row.reason}; moved aside before the next launch",
            )
            return
        async with self._copies:
            await self.book.keep_copy(on_disk, row)
        # The same rule the planner resumes by: only in-place files take their content's step.
        step = with_content_step(on_disk.ckpt, row.step).step
        if step is not None and on_disk.ckpt.role in self.layout.roles:
            self._emit(CheckpointVerified(step))

    # --- before a launch ----------------------------------------------------------------

    async def prepare(self, attempt: int, below_step: int | None = None) -> Prepared | PrepareFailed:
        """Let pending checkpoints land and be verified, then plan the resume and prepare
        the run directory so that the trainer's own rule lands on the verified state.
        `below_step`: a NaN rollback; states at or after it are moved aside."""
        try:
            await self._settle()
            await self.book.verify_all()  # anything the watcher has not reported yet
            async with self._copies:  # (retention must not drop a copy being restored)
                return await self._plan_and_apply(attempt, below_step)
        except Exception as exc:
            log.exception("error while preparing the run directory")
            return PrepareFailed(
                attempt, f"error while preparing the run directory: {type(exc).__name__}: {exc}"
            )

    async def _plan_and_apply(self, attempt: int, below_step: int | None) -> Prepared | PrepareFailed:
        the_plan = await self._plan_rechecked(below_step)
        if not the_plan.ok:
            self.book.record_plan(the_plan, attempt)  # a refusal is part of the account too
            return PrepareFailed(attempt, the_plan.problem or "no plan")
        best = self._best_step()
        if the_plan.target_step is None and the_plan.moves and best is not None and below_step is None:
            # Everything would be moved aside although a verified state existed: never
            # hand the trainer a fresh start on our own judgement.
            return PrepareFailed(
                attempt,
                f"a checkpoint was verified (at {best}, in the adapter's steps or epochs), but no "
                "verified state is left to resume from (see 'train-supervisor plan'); refusing to "
                "let the trainer start from scratch",
            )
        await self.book.apply(the_plan, attempt)
        for move in the_plan.moves:
            self.watcher.forget(move.path)
        if below_step is not None:
            await self._forget_copies_from(below_step, attempt)
        self._warn_before_relaunch(the_plan.target_step)
        return Prepared(attempt, the_plan.summary(), the_plan.target_step, self._epoch_of(the_plan))

    async def _plan_rechecked(self, below_step: int | None) -> Plan:
        """The plan, its target read again first where a reboot came after its verdict."""
        the_plan = self.book.plan(below_step)
        tried: set[tuple[str, int, int, int, int]] = set()
        while stale := [f for f in self.book.stale_targets(the_plan) if f.key not in tried]:
            for f in stale:
                tried.add(f.key)
                row = await self.book.recheck(f)
                if row is None:
                    reason = self.book.errors.get(f.key, "validator error")
                    self._event("unverifiable", "error", f"could not read {f.ckpt.path} again: {reason}")
                elif not row.ok:
                    self._event("rejected", "warning", f"checkpoint rejected: {f.ckpt.path}: {row.reason}")
                else:
                    log.info("read again after the restart: as verified", path=str(f.ckpt.path))
            the_plan = self.book.plan(below_step)
        return the_plan

    def _epoch_of(self, the_plan: Plan) -> int | None:
        """The epoch of the state the trainer will resume from, where its files say."""
        rows = [self.book._verdict_of(path) for path in the_plan.target.values()]
        epochs = [row.epoch for row in rows if row is not None and row.epoch is not None]
        return min(epochs) if epochs else None

    async def _forget_copies_from(self, below_step: int, attempt: int) -> None:
        """Our verified copies of states saved after the loss went bad: never a resume
        point again (they are ours, not the trainer's files: dropped, not quarantined)."""
        dropped = [snap for snap in self.book.snapshots() if snap.step >= below_step]
        await self.book.drop(dropped)
        if dropped:
            names = ", ".join(sorted({snap.original.name for snap in dropped}))
            self._event(
                "rollback",
                "warning",
                f"dropped {len(dropped)} verified copies at or after step {below_step}: {names}",
            )

    async def _settle(self) -> None:
        """Wait (up to verify_wait_s) for files still landing and verifications queued.
        Past that, plan anyway: what is still unjudged is treated as unverified."""
        wait_s = self.config.checkpoints.verify_wait_s
        if not await self.watcher.wait_quiet(wait_s):
            log.warning(
                "checkpoints still being written after verify_wait_s", pending=len(self.watcher.pending())
            )
        try:
            await asyncio.wait_for(self._to_verify.join(), wait_s)
        except TimeoutError:
            log.warning("checkpoints still being verified after verify_wait_s: planning without them")

    def _warn_before_relaunch(self, target_step: int | None) -> None:
        adapter = trainer_adapters.get(self.config.adapter.name)
        if adapter.relaunch_warning is None:
            return
        message = adapter.relaunch_warning(self.config.adapter.options, target_step)
        if message:
            log.warning(message, kind="relaunch_warning")
            self._event("relaunch_warning", "warning", message)

    def _event(self, kind: str, level: str, message: str) -> None:
        self.ledger.add_event(time.time(), self._attempt(), kind, level, message)
        self.ledger.commit()
