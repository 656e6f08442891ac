"""Checkpoint bookkeeping shared by the daemon and the CLI: what the validator said about
each file version on disk (`on_disk`), the verified copies, the resume plan, and carrying
it out (`carry_out`).

File I/O that can take a while (copies) runs in a thread; the ledger is only touched
from the caller's thread.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import structlog

from supervisor.checkpoints import carry_out
from supervisor.checkpoints.entries import Kind, describe
from supervisor.checkpoints.kept_copies import KeptCopies
from supervisor.checkpoints.on_disk import OnDisk, listing, request_for, row_from, stat_checkpoint
from supervisor.checkpoints.pinned import PinnedDir
from supervisor.checkpoints.plan import Candidate, Plan, Status, plan, with_content_step
from supervisor.checkpoints.shapes import SHAPES_DIFFER, ShapeReference, shape_change, shape_rejection
from supervisor.checkpoints.watch_sources import version_of
from supervisor.core.file_version import VersionKey
from supervisor.ledger import Ledger, VerdictRow
from supervisor.outputs.reporter import Report
from supervisor.process.writers import writers_of
from supervisor.validator.client import EMPTY, ValidatorClient
from trainer_adapters.base import Layout

log = structlog.get_logger("supervisor.checkpoints")

DEFAULT_RESERVE_BYTES = 512 * 1024 * 1024
SHAPES_META = "model_shapes:"  # ledger meta, per role: a ShapeReference


CHANGED_REREADS = 3  # reads of a file that changes under each one, before it is unknown


@dataclass(frozen=True)
class Unsettled:
    """No verdict: the file was caught while it was being written. Read it again once
    it is quiet; nothing about this version is recorded."""

    reason: str


@dataclass(frozen=True)
class Applied:
    """What carrying out a plan did: why each move or restore that did not happen did not
    (`kept`), and whether anything was moved or restored at all (`carried`)."""

    kept: list[str]
    carried: bool


class CheckpointBook:
    """The run's checkpoints. With `record=False` (a dry `plan`) verdicts stay in memory."""

    def __init__(
        self,
        *,
        layout: Layout,
        directories: Sequence[Path],
        state_dir: Path,
        ledger: Ledger | None,
        validator: ValidatorClient,
        keep_verified: int,
        record: bool = True,
        reserve_bytes: int = DEFAULT_RESERVE_BYTES,
        report: Report | None = None,
        accept_model_change: bool = False,
        unit: str = "step",
    ) -> None:
        self.layout = layout
        self.directories = list(directories)
        self.state_dir = state_dir
        self.ledger = ledger
        self.validator = validator
        self.record = record and ledger is not None
        self._memory: dict[VersionKey, VerdictRow] = {}
        # After a reboot: verdicts older than this may have been read from a page cache
        # that never reached the disk; a plan's target is read again before it is trusted.
        self.recheck_before: float | None = None
        # Files the validator failed on (crash, timeout): not verdicts, retried next time.
        self.errors: dict[VersionKey, str] = {}
        self._report = report or _log_only
        self.kept = KeptCopies(state_dir, keep_verified, reserve_bytes, self._report)
        self.accept_model_change = accept_model_change
        self.unit = unit  # what the trainer's states count, for what the plan says
        self._shape_references: dict[str, ShapeReference | None] = {}

    # --- what is on disk, and what we know of it -----------------------------------

    def scan(self) -> list[OnDisk]:
        """Every entry named like a checkpoint, whatever it is, in directory order."""
        found = []
        for directory in self.directories:
            for path in listing(directory, self.layout.recursive):
                on_disk = stat_checkpoint(self.layout, path)
                if on_disk is not None:
                    found.append(on_disk)
        return found

    def known(self, f: OnDisk) -> VerdictRow | None:
        if f.key in self._memory:
            return self._memory[f.key]
        return self.ledger.verdict(*f.key) if self.ledger is not None else None

    async def verify(self, f: OnDisk, attempt: int | None = None) -> VerdictRow | None:
        """The verdict for this file version, from the ledger or the validator; None when
        the validator failed (its reason is in `errors`). `attempt`: what the log lines
        name (the current one when not given). For a directory at rest (the trainer
        stopped): a file that changes while it is read is read again, up to
        CHANGED_REREADS times, then is unknown."""
        reason = "changed while it was read"
        for _ in range(CHANGED_REREADS):
            found = await self._verify(f, attempt)
            if not isinstance(found, Unsettled):
                return found
            reason = found.reason
            again = stat_checkpoint(self.layout, f.ckpt.path)
            if again is None or not again.judged:
                return None
            f = again
        self.errors[f.key] = f"{reason}, {CHANGED_REREADS} times: something is still writing it"
        log.error("could not verify a checkpoint", path=str(f.ckpt.path), error=self.errors[f.key])
        return None

    async def verify_landed(self, f: OnDisk, attempt: int | None) -> VerdictRow | Unsettled | None:
        """`verify` for a file that just landed while the trainer runs: a version caught
        mid-write (empty, changed while it was read, or found bad while a process still
        holds it open for writing) has no verdict yet, and nothing is recorded about it."""
        return await self._verify(f, attempt, live=True)

    async def _verify(
        self, f: OnDisk, attempt: int | None, *, live: bool = False
    ) -> VerdictRow | Unsettled | None:
        row = self.known(f)
        if row is not None and not (self.accept_model_change and shape_rejection(row)):
            return row
        about = {"attempt": attempt} if attempt is not None else {}
        await self._newer_first(f, live)
        found = await self._validate(f, "could not verify a checkpoint")
        if not isinstance(found, VerdictRow):
            return found
        row = found
        if live and not row.ok and row.reason == EMPTY:
            return Unsettled("empty: its write has not begun")
        if live and not row.ok and (writing := writers_of([f.ckpt.path]).get(f.ckpt.path)):
            return Unsettled(f"{row.reason}, while {writing[0].describe()} has it open for writing")
        if live and not row.ok and version_of(f.ckpt.path) != row.version:  # (None: gone)
            # Its writer finished (and closed it) after the read: that verdict was of a
            # version caught mid-write, on a machine too busy to see the writer at it.
            return Unsettled(f"{row.reason}, and it was written again after it was read")
        self._remember(row)
        if row.ok:
            log.info(
                "checkpoint verified", path=row.path, step=row.step, seconds=round(row.seconds, 3), **about
            )
        else:
            log.warning("checkpoint rejected", path=row.path, reason=row.reason, **about)
        return row

    async def _newer_first(self, f: OnDisk, live: bool) -> None:
        """Where the run has no model shapes yet for the role of `f`, the newest-written
        file of that role sets them, in whatever order files come to be judged (the
        watcher's, a plan's): files written after `f` and not judged yet go first."""
        role = f.ckpt.role
        if role is None or self._shape_reference(role) is not None:
            return
        newer = [
            g
            for g in self.scan()
            if g.judged and g.ckpt.role == role and g.version.mtime_ns > f.version.mtime_ns
            if self.known(g) is None and g.key not in self.errors
        ]
        for g in sorted(newer, key=lambda g: g.version.mtime_ns, reverse=True):
            if self._shape_reference(role) is not None:
                return
            if live:  # judged as it lands would be: one caught mid-write is left for later
                await self.verify_landed(g, None)
            else:
                await self.verify(g)

    async def _validate(self, f: OnDisk, failed: str) -> VerdictRow | Unsettled | None:
        """The validator's verdict as a row; Unsettled when the file changed while it was
        read; None when the validator itself failed (its reason goes to `errors`, and the
        log says `failed`)."""
        verdict = await self.validator.validate(request_for(self.layout, f.ckpt))
        if verdict.changed:
            return Unsettled(verdict.reason or "changed while it was read")
        if verdict.validator_error:
            self.errors[f.key] = verdict.reason or "validator error"
            log.error(failed, path=str(f.ckpt.path), error=verdict.reason)
            return None
        self.errors.pop(f.key, None)
        return self._against_shapes(row_from(verdict, f.ckpt.role), verdict.shapes)

    def _against_shapes(self, row: VerdictRow, shapes: dict[str, list[int]] | None) -> VerdictRow:
        """A good file whose model keys or shapes differ from the run's reference for its
        role (the newest-written verified file of that role: the model the trainer now
        builds) is rejected, since the trainer would load it partly, unless the change is
        accepted. A good file written after the reference becomes the reference."""
        if not row.ok or shapes is None or row.role is None:
            return row
        reference = self._shape_reference(row.role)
        change = shape_change(reference.shapes, shapes) if reference is not None else None
        if reference is not None and change is not None:
            if not self.accept_model_change:
                reason = (
                    f"{SHAPES_DIFFER} from {Path(reference.path).name}, the run's newest "
                    f"verified {row.role}: {change}; the trainer would load it with the mis-shaped keys "
                    "dropped and train them from scratch (run --accept-model-change if the model was "
                    "changed on purpose)"
                )
                return replace(row, ok=False, reason=reason)
            log.warning("the model's shape changed, accepted", path=row.path, change=change)
        if reference is None or row.version.mtime_ns >= reference.mtime_ns:
            self._set_shape_reference(row.role, ShapeReference(row.path, row.version.mtime_ns, shapes))
        return row

    def _shape_reference(self, role: str) -> ShapeReference | None:
        if role not in self._shape_references:
            stored = self.ledger.meta(SHAPES_META + role) if self.ledger is not None else None
            self._shape_references[role] = ShapeReference.parse(stored) if stored else None
        return self._shape_references[role]

    def _set_shape_reference(self, role: str, reference: ShapeReference) -> None:
        self._shape_references[role] = reference
        if self.record and self.ledger is not None:
            self.ledger.set_meta(SHAPES_META + role, reference.dump())

    async def verify_all(self) -> list[VerdictRow | None]:
        """Every file to judge, newest-written first (as `verify` would judge them)."""
        files = sorted((f for f in self.scan() if f.judged), key=lambda f: f.version.mtime_ns, reverse=True)
        return [await self.verify(f) for f in files]

    def stale_targets(self, the_plan: Plan) -> list[OnDisk]:
        """The plan's files on disk whose good verdict predates `recheck_before` (a
        restored verified copy is ours, written durably: never stale)."""
        if self.recheck_before is None:
            return []
        restored = {r.path for r in the_plan.restores}
        stale = []
        for path in the_plan.target.values():
            f = stat_checkpoint(self.layout, path) if path not in restored else None
            row = self.known(f) if f is not None else None
            if f is not None and row is not None and row.ok and row.verified_at < self.recheck_before:
                stale.append(f)
        return stale

    async def recheck(self, f: OnDisk) -> VerdictRow | None:
        """Read a file again although its identity is unchanged: the new verdict replaces
        the old one. None when the validator failed: until a read succeeds the file is
        unknown (in `errors`), and no plan resumes from it."""
        new = await self._validate(f, "could not read a checkpoint again")
        if isinstance(new, Unsettled):
            self.errors[f.key] = new.reason
            log.error("could not read a checkpoint again", path=str(f.ckpt.path), error=new.reason)
            return None
        if new is None:
            return None
        if not new.ok:
            new = replace(new, reason=f"changed on disk since it was verified (power loss?): {new.reason}")
        self._memory.pop(f.key, None)
        self._remember(new)
        return new

    def _remember(self, row: VerdictRow) -> None:
        self._memory[row.key] = row
        if self.record and self.ledger is not None:
            self.ledger.add_verdict(row)
            self.ledger.commit()

    def candidates(
        self, files: Sequence[OnDisk], writing: Mapping[Path, str] | None = None
    ) -> list[Candidate]:
        """What the planner knows of each entry. `writing`: entries still being written
        (and by whom): never moved, never resumed from."""
        return [self._candidate(f, (writing or {}).get(f.ckpt.path)) for f in files]

    def _candidate(self, f: OnDisk, writing: str | None) -> Candidate:
        written = f.version.mtime_ns
        if f.kind is not Kind.FILE:
            reason = describe(f.kind, f.ckpt.path)
            return Candidate(f.ckpt, Status.REJECTED, reason, not_a_file=True, written_ns=written)
        if writing is not None:
            return Candidate(f.ckpt, Status.WRITING, writing, written_ns=written)
        if f.ckpt.interferes is not None:
            return Candidate(f.ckpt, Status.UNVERIFIED, written_ns=written)
        row = self.known(f)
        if f.key in self.errors:  # (a verdict that could not be confirmed is no verdict)
            return Candidate(f.ckpt, Status.UNKNOWN, self.errors[f.key], written_ns=written)
        if row is None:
            return Candidate(f.ckpt, Status.UNVERIFIED, written_ns=written)
        ckpt = with_content_step(f.ckpt, row.step)
        if row.ok:
            return Candidate(ckpt, Status.OK, written_ns=written)
        return Candidate(ckpt, Status.REJECTED, row.reason, written_ns=written)

    # --- the plan -------------------------------------------------------------------

    def plan(self, below_step: int | None = None, writing: Mapping[Path, str] | None = None) -> Plan:
        return plan(
            self.layout,
            self.candidates(self.scan(), writing),
            [snap for snap in self.kept.snapshots() if self._in_directories(snap.original)],
            below_step=below_step,
            below_reason=f"saved at or after {self.unit} {below_step}, when the loss had gone NaN/Inf",
            unit=self.unit,
        )

    async def apply(self, the_plan: Plan, attempt: int, pinned: PinnedDir | None = None) -> Applied:
        """Move aside and restore as planned (through the pinned directory, when given);
        record what really happened, and return it."""
        reasons = {str(m.path): m.reason for m in the_plan.moves}
        verdicts = {str(m.path): _verdict_dict(self.verdict_of(m.path)) for m in the_plan.moves}
        results = await asyncio.to_thread(carry_out.move_aside, the_plan, self.state_dir, verdicts, pinned)
        kept = [
            f"could not move {original} aside: {result.why_not}"
            for original, result in results
            if not result.moved
        ]
        restored: list[VerdictRow] = []
        if not kept:  # (a restore never goes over a file that is still there)
            restored, failed = await asyncio.to_thread(carry_out.restore, the_plan, pinned)
            kept += failed
        now = time.time()
        for original, result in results:
            if result.moved:
                reason = reasons[original]
                if self.ledger is not None:
                    self.ledger.add_quarantined(now, original, str(result.destination), reason)
                self._report("quarantined", "warning", f"moved {original} to {result.destination}: {reason}")
        for why in kept:
            self._report("move_failed", "error", why)
        for row in restored:
            self._remember(row)
        return Applied(kept, carried=any(result.moved for _, result in results) or bool(restored))

    def record_plan(self, the_plan: Plan, attempt: int, refusal: str | None = None) -> None:
        """Keep the plan (carried out or refused, and why) in the ledger."""
        if self.ledger is None:
            return
        problem = refusal or the_plan.problem
        detail = {
            "target": {role: str(p) for role, p in the_plan.target.items()},
            "moves": [{"path": str(m.path), "reason": m.reason} for m in the_plan.moves],
            "restores": [{"from": str(r.copy), "to": str(r.path), "step": r.step} for r in the_plan.restores],
            "problem": problem,
        }
        summary = the_plan.summary() + (f"; REFUSED: {refusal}" if refusal and the_plan.ok else "")
        ok = the_plan.ok and refusal is None
        self.ledger.add_plan(
            time.time(), attempt, the_plan.target_step, ok, summary, json.dumps(detail, sort_keys=True)
        )
        self.ledger.commit()

    def _in_directories(self, path: Path) -> bool:
        """A copy of a file from elsewhere (the run directory moved since it was kept) is
        never put back: its original path is no longer the trainer's."""
        return any(
            path.parent == d or (self.layout.recursive and path.is_relative_to(d)) for d in self.directories
        )

    def verdict_of(self, path: Path) -> VerdictRow | None:
        on_disk = stat_checkpoint(self.layout, path)
        return self.known(on_disk) if on_disk is not None else None


def _log_only(kind: str, level: str, message: str) -> None:
    getattr(log, level)(message, kind=kind)


def _verdict_dict(row: VerdictRow | None) -> dict[str, object] | None:
    if row is None:
        return None
    return {
        "ok": row.ok,
        "reason": row.reason,
        "step": row.step,
        "checksum": row.checksum,
        "size": row.version.size,
    }
