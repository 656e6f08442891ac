"""The one way a run directory is prepared for the trainer: used by the daemon before
every launch and by `train-supervisor plan --apply` (a SLURM prolog, or a user about to
start the trainer by hand), so both do exactly the same.

On start: pin and lock the checkpoint directory, clear what a crashed supervisor left
half done, and after a reboot mark the verdicts to read again. Before a launch: let
pending files land (the daemon's watcher), verify what is unverified, keep verified
copies, plan (reading a resume target again after a reboot), refuse what must not
happen (moving a file still being written; a fresh start although a complete verified
state existed), carry the plan out through the pinned directory, and check the prepared
directory again with the trainer's own rule, in the order the directory now lists it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

import trainer_adapters
from supervisor.checkpoints import reconcile
from supervisor.checkpoints.loadable import LoadCheck
from supervisor.checkpoints.on_disk import OnDisk, stat_checkpoint
from supervisor.checkpoints.pinned import DirectoryChanged, PinnedDir
from supervisor.checkpoints.plan import Plan
from supervisor.checkpoints.refusals import fresh_start_refusal
from supervisor.checkpoints.verdicts import CheckpointBook
from supervisor.config import Config
from supervisor.core import Prepared, PrepareFailed
from supervisor.core.file_version import VersionKey
from supervisor.ledger import Ledger, VerdictRow
from supervisor.outputs.reporter import Report
from supervisor.process.procfs import boot_id
from supervisor.process.writers import writers_of
from trainer_adapters.base import Layout

log = structlog.get_logger("supervisor")

SUSPECT_BEFORE = "verdicts_suspect_before"  # ledger meta: verdicts older are read again
DIRECTORY_WAS = "checkpoint_dir_resolved"  # ledger meta: where the checkpoint dir led last start
APPLY_ROUNDS = 3  # plan, carry out, check again: a restore may list in another order


@dataclass(frozen=True)
class Outcome:
    """A preparation's result: the plan carried out (or refused), the refusal if any, and
    the plan the prepared directory was checked with afterwards."""

    plan: Plan
    refusal: str | None = None
    applied: bool = False
    checked: Plan | None = None
    retry: bool = False  # the refusal may clear by itself (a move that failed: a full disk)


class Preparation:
    def __init__(
        self,
        config: Config,
        layout: Layout,
        ledger: Ledger | None,
        book: CheckpointBook,
        *,
        report: Report,
        settle: Callable[[], Awaitable[set[Path]]] | None = None,
        copies: asyncio.Lock | None = None,
        launches: bool = False,
    ) -> None:
        """`settle`: wait for pending files to land; returns those still changing. The
        daemon's watcher knows; without it, files changed within quiet_s are watched.
        `copies`: held while verified copies are made, dropped or restored (the daemon's
        verifier makes them too), never while waiting for files to settle. `launches`:
        the supervisor launches the trainer itself (with the shim `trainer_safe_globals`
        asks for); else whoever starts it must give it that environment."""
        directory = config.adapter.checkpoint_dir
        assert directory is not None
        self.config = config
        self.layout = layout
        self.ledger = ledger
        self.book = book
        self.report = report
        self.settle = settle or self._watch_recent
        self.pinned = PinnedDir(directory)
        self.copies = copies or asyncio.Lock()
        self.loads = LoadCheck(config, layout, launches=launches)

    # --- on start ------------------------------------------------------------------------

    async def start(self, attempt: int, best_step: int | None) -> None:
        """Pin and lock the checkpoint directory (DirectoryTaken: another supervisor has
        it), then clear what a crashed supervisor left. Tidying is advice: an error in it
        never keeps the supervisor from starting."""
        assert self.ledger is not None, "only a ledger's run directory is prepared"
        note = await asyncio.to_thread(self.pinned.pin)
        if note is not None:
            self.report("lock", "warning", note)
        now = time.time()
        findings = self._after_reboot(now) + self._directory_moved()
        try:
            findings += await self._tidy(now, best_step)
        except Exception:
            log.exception("could not tidy up after the last supervisor; going on")
        for finding in findings:
            self.report(finding.kind, finding.level, finding.message)

    def stop(self) -> None:
        self.pinned.release()

    def read_reboot_marks(self) -> None:
        """For a dry plan: which verdicts a reboot made suspect, writing nothing."""
        if self.ledger is None:
            return
        last = self.ledger.meta("boot_id")
        if last is not None and last != boot_id():
            self.book.recheck_before = time.time()
            return
        suspect_before = self.ledger.meta(SUSPECT_BEFORE)
        self.book.recheck_before = float(suspect_before) if suspect_before else None

    def _after_reboot(self, now: float) -> list[reconcile.Finding]:
        """Verdicts made before a reboot may have been read from a page cache that never
        reached the disk. The time of the first start after it is kept in the ledger, so
        that a supervisor restarted before the re-reads were done still makes them."""
        assert self.ledger is not None
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

    def _directory_moved(self) -> list[reconcile.Finding]:
        """The checkpoint directory is pinned for as long as a supervisor runs; between two
        starts it may have been replaced (by a link elsewhere, say), which is said."""
        assert self.ledger is not None
        assert self.pinned.real is not None
        last, real = self.ledger.meta(DIRECTORY_WAS), self.pinned.real
        if last == real:
            return []
        self.ledger.set_meta(DIRECTORY_WAS, real)
        self.ledger.commit()
        if last is None:
            return []
        message = (
            f"the checkpoint directory {self.pinned.path} now leads to {real}, not to {last} as when this "
            "run last started: its files are judged as new ones, and those in the trainer's way are moved "
            "aside. If that is not what you meant, stop the supervisor and put the directory back"
        )
        return [reconcile.Finding("checkpoint_dir_moved", "warning", message)]

    async def _tidy(self, now: float, best_step: int | None) -> list[reconcile.Finding]:
        assert self.ledger is not None
        tidied = await asyncio.to_thread(
            reconcile.tidy,
            self.config.state_dir,
            [self.pinned.path],
            lambda path: self.layout.parse(path) is not None,
            self.ledger.quarantine_destinations(),
            recursive=self.layout.recursive,
        )
        for move in tidied.found_moves:
            self.ledger.add_quarantined(now, move.original, move.moved_to, move.reason)
            message = f"found {move.moved_to} moved aside before a restart, now recorded: {move.reason}"
            tidied.findings.append(reconcile.Finding("quarantined", "warning", message))
        return tidied.findings + self._newest_state_on_disk(best_step)

    def _newest_state_on_disk(self, best: int | None) -> list[reconcile.Finding]:
        """The files of the newest verified state, gone or changed since verified."""
        if best is None or self.ledger is None:
            return []
        kept = {snap.original for snap in self.book.kept.snapshots() if snap.step == best}
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

    # --- before a launch --------------------------------------------------------------

    async def prepare(
        self, attempt: int, below_step: int | None = None, *, final: bool = False
    ) -> Prepared | PrepareFailed:
        """Prepare the run directory so that the trainer's own rule lands on the newest
        verified state. `below_step`: a NaN rollback; states at or after it go aside."""
        try:
            outcome = await self.run(attempt, below_step, apply=True, final=final)
        except DirectoryChanged as exc:
            return PrepareFailed(attempt, str(exc))
        except Exception as exc:
            log.exception("error while preparing the run directory")
            return PrepareFailed(
                attempt, f"error while preparing the run directory: {type(exc).__name__}: {exc}"
            )
        if outcome.refusal is not None:
            return PrepareFailed(attempt, outcome.refusal, retry=outcome.retry)
        # What a launch resumes from is the plan checked after applying; what settling a
        # finished run did is the plan it carried out.
        the_plan = outcome.plan if final and outcome.applied else outcome.checked or outcome.plan
        if below_step is not None:
            await self.rolled_back(below_step)
        if not final:
            self._warn_before_relaunch(the_plan.target_step)
        return Prepared(attempt, the_plan.summary(), the_plan.target_step, self._epoch_of(the_plan))

    async def run(
        self, attempt: int, below_step: int | None = None, *, apply: bool, final: bool = False
    ) -> Outcome:
        """The plan, and with `apply` the directory prepared by it. Every plan, carried
        out or refused, goes to the ledger when applying (a `final` one, settling a
        finished run, only where it changed something or was refused)."""
        writing = await self._settled()
        await self.book.verify_all()  # anything not reported yet
        async with self.copies:
            return await self._plan_and_apply(attempt, below_step, writing, apply=apply, final=final)

    async def _plan_and_apply(
        self, attempt: int, below_step: int | None, writing: dict[Path, str], *, apply: bool, final: bool
    ) -> Outcome:
        if apply:
            await self._keep_copies()
        the_plan = await self._plan(below_step, writing)
        refusal = self._refusal(the_plan, below_step, final)
        if refusal is not None or not apply:
            if apply:
                self.book.record_plan(the_plan, attempt, refusal)
            return Outcome(the_plan, refusal)
        applied, carried = the_plan, False
        for _ in range(APPLY_ROUNDS):
            done = await self.book.apply(the_plan, attempt, self.pinned)
            carried = carried or done.carried
            if done.kept:
                self.book.record_plan(the_plan, attempt, done.kept[0])
                return Outcome(applied, done.kept[0], applied=carried, retry=True)
            if done.carried or not final:
                self.book.record_plan(the_plan, attempt)
            checked = await self._plan(below_step, writing)
            if not checked.moves and not checked.restores:
                refusal = None if checked.ok else checked.problem or "no plan"
                if refusal is not None:
                    self.book.record_plan(checked, attempt, refusal)
                return Outcome(applied, refusal, applied=True, checked=checked)
            refusal = self._refusal(checked, below_step, final)  # every round's plan is checked first
            if refusal is not None:
                self.book.record_plan(checked, attempt, refusal)
                return Outcome(applied, refusal, applied=True, checked=checked)
            the_plan = checked
        why = f"the run directory keeps changing while it is prepared: {the_plan.summary()}"
        return Outcome(applied, why, applied=True, checked=the_plan, retry=True)

    async def _settled(self) -> dict[Path, str]:
        """Files still being written once pending ones had their time to land."""
        changing = await self.settle()
        return {path: "still being written (it kept changing past verify_wait_s)" for path in changing}

    async def _watch_recent(self) -> set[Path]:
        """Without a watcher: files changed within quiet_s are looked at once more, quiet_s
        later; those that changed again are still being written."""
        quiet_s = self.config.checkpoints.quiet_s
        files = [f for f in self.book.scan() if f.judged]
        recent = [f for f in files if time.time_ns() - f.version.mtime_ns < quiet_s * 1e9]
        if not recent:
            return set()
        await asyncio.sleep(quiet_s)
        return {f.ckpt.path for f in recent if stat_checkpoint(self.layout, f.ckpt.path) != f}

    async def _keep_copies(self) -> None:
        """What a running supervisor keeps as files land, a preparation keeps too."""
        for on_disk in self.book.scan():
            row = self.book.known(on_disk)
            if row is not None and row.ok:
                await self.book.kept.keep(on_disk, row, self.pinned)

    async def _plan(self, below_step: int | None, writing: dict[Path, str]) -> Plan:
        """The plan; files it would move that a process holds open for writing are
        marked as being written (never moved), and its target is read again where a
        reboot came after its verdict."""
        the_plan = await self._plan_rechecked(below_step, writing)
        writers = await asyncio.to_thread(writers_of, [m.path for m in the_plan.moves])
        if not writers:
            return the_plan
        for path, found in writers.items():
            writing[path] = "still being written by " + ", ".join(w.describe() for w in found)
        return await self._plan_rechecked(below_step, writing)

    async def _plan_rechecked(self, below_step: int | None, writing: dict[Path, str]) -> Plan:
        the_plan = self.book.plan(below_step, writing)
        tried: set[VersionKey] = set()
        while stale := [f for f in self.book.stale_targets(the_plan) if f.key not in tried]:
            for f in stale:
                tried.add(f.key)
                self._reread(f, await self.book.recheck(f))
            the_plan = self.book.plan(below_step, writing)
        return the_plan

    def _reread(self, f: OnDisk, row: VerdictRow | None) -> None:
        if row is None:
            reason = self.book.errors.get(f.key, "validator error")
            self.report("unverifiable", "error", f"could not read {f.ckpt.path} again: {reason}")
        elif not row.ok:
            self.report("rejected", "warning", f"checkpoint rejected: {f.ckpt.path}: {row.reason}")
        else:
            log.info("read again after the restart: as verified", path=str(f.ckpt.path))

    def _refusal(self, the_plan: Plan, below_step: int | None, final: bool) -> str | None:
        """Why the plan cannot be carried out; before a launch, also why the trainer would
        not land on its target (a finished run launches nothing: only the plan counts)."""
        if not the_plan.ok:
            return the_plan.problem or "no plan"
        if final:
            return None
        complete = self.ledger.newest_complete_state(self.layout.roles) if self.ledger is not None else None
        return fresh_start_refusal(the_plan, complete, below_step) or self._unloadable(the_plan)

    def _unloadable(self, the_plan: Plan) -> str | None:
        """The target holds globals the trainer's own weights-only torch.load refuses."""
        rows = [self.book.verdict_of(path) for path in the_plan.target.values()]
        return self.loads.refusal(sorted({name for row in rows if row for name in row.needs_globals}))

    def _epoch_of(self, the_plan: Plan) -> int | None:
        """The epoch of the state the trainer will resume from, where its files say."""
        rows = [self.book.verdict_of(path) for path in the_plan.target.values()]
        epochs = [row.epoch for row in rows if row is not None and row.epoch is not None]
        return min(epochs) if epochs else None

    async def rolled_back(self, below_step: int) -> None:
        """A NaN rollback carried out: our verified copies of states saved after the loss
        went bad are never a resume point again (they are ours, not the trainer's files:
        dropped, not quarantined), and those states no longer count as ones a fresh
        start would lose."""
        async with self.copies:
            await self._forget_copies_from(below_step)

    async def _forget_copies_from(self, below_step: int) -> None:
        if self.ledger is not None:
            self.ledger.add_rollback(below_step, time.time())
            self.ledger.commit()
        dropped = [snap for snap in self.book.kept.snapshots() if snap.step >= below_step]
        await self.book.kept.drop(dropped)
        if dropped:
            names = ", ".join(sorted({snap.original.name for snap in dropped}))
            message = f"dropped {len(dropped)} verified copies at or after step {below_step}: {names}"
            self.report("rollback", "warning", message)

    def _warn_before_relaunch(self, target_step: int | None) -> None:
        adapter = trainer_adapters.get(self.config.adapter.name)
        if adapter.relaunch_warning is None:
            return
        message = adapter.relaunch_warning(self.config.adapter.options, target_step)
        if message:
            self.report("relaunch_warning", "warning", message)
