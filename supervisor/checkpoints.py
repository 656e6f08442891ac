"""Checkpoint bookkeeping shared by the daemon and the CLI: what is on disk, what the
validator said about each file version, the resume plan, and carrying it out.

File I/O that can take a while (copies) runs in a thread; the ledger is only touched
from the caller's thread.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import structlog

from supervisor import store
from supervisor.ledger import Ledger, VerdictRow
from supervisor.planner import Candidate, Plan, Snapshot, Status, plan, retention, with_content_step
from supervisor.validation import ValidationRequest, ValidatorClient, Verdict
from trainer_adapters.base import Layout, NamedCheckpoint

log = structlog.get_logger("supervisor.checkpoints")


@dataclass(frozen=True)
class OnDisk:
    ckpt: NamedCheckpoint
    size: int
    mtime_ns: int
    inode: int
    ctime_ns: int

    @property
    def key(self) -> tuple[str, int, int, int, int]:
        return (str(self.ckpt.path), self.size, self.mtime_ns, self.inode, self.ctime_ns)


def stat_checkpoint(layout: Layout, path: Path) -> OnDisk | None:
    """The file as a resume checkpoint of this layout, or None (not one, or gone)."""
    ckpt = layout.parse(path)
    if ckpt is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return OnDisk(ckpt, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


def request_for(layout: Layout, ckpt: NamedCheckpoint) -> ValidationRequest:
    expect = layout.expect(ckpt)
    return ValidationRequest(
        path=str(ckpt.path),
        required_keys=expect.required_keys,
        step_key=expect.step_key,
        epoch_key=expect.epoch_key,
        expected_step=ckpt.step,
        expected_epoch=ckpt.epoch,
        allowed_globals=expect.allowed_globals,
    )


def row_from(verdict: Verdict, role: str | None) -> VerdictRow:
    return VerdictRow(
        path=verdict.path,
        size=verdict.size,
        mtime_ns=verdict.mtime_ns,
        inode=verdict.inode,
        ok=verdict.ok,
        reason=verdict.reason,
        step=verdict.step,
        epoch=verdict.epoch,
        role=role,
        checksum=verdict.checksum,
        format=verdict.format,
        seconds=verdict.seconds,
        verified_at=time.time(),
        ctime_ns=verdict.ctime_ns,
    )


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
    ) -> None:
        self.layout = layout
        self.directories = list(directories)
        self.state_dir = state_dir
        self.ledger = ledger
        self.validator = validator
        self.keep_verified = keep_verified
        self.record = record and ledger is not None
        self._memory: dict[tuple[str, int, int, int, int], VerdictRow] = {}
        # After a reboot: verdicts older than this may have been read from a page cache
        # that never reached the disk; a plan's target is read again before it is trusted.
        self.recheck_before: float | None = None
        # Files the validator failed on (crash, timeout): not verdicts, retried next time.
        self.errors: dict[tuple[str, int, int, int, int], str] = {}

    # --- what is on disk, and what we know of it -----------------------------------

    def scan(self) -> list[OnDisk]:
        found = []
        for directory in self.directories:
            for root, dirs, files in os.walk(directory):
                if not self.layout.recursive:
                    dirs.clear()  # the trainer looks at this directory only
                dirs.sort()
                for name in sorted(files):
                    on_disk = stat_checkpoint(self.layout, Path(root) / name)
                    if on_disk is not None:
                        found.append(on_disk)
        return found

    def known(self, f: OnDisk) -> VerdictRow | None:
        if f.key in self._memory:
            return self._memory[f.key]
        return self.ledger.verdict(*f.key) if self.ledger is not None else None

    async def verify(self, f: OnDisk) -> VerdictRow | None:
        """The verdict for this file version, from the ledger or the validator; None when
        the validator failed (its reason is in `errors`)."""
        row = self.known(f)
        if row is not None:
            return row
        row = await self._validate(f, "could not verify a checkpoint")
        if row is None:
            return None
        self._remember(row)
        if row.ok:
            log.info("checkpoint verified", path=row.path, step=row.step, seconds=round(row.seconds, 3))
        else:
            log.warning("checkpoint rejected", path=row.path, reason=row.reason)
        return row

    async def _validate(self, f: OnDisk, failed: str) -> VerdictRow | None:
        """The validator's verdict as a row; None when the validator itself failed (its
        reason goes to `errors`, and the log says `failed`)."""
        verdict = await self.validator.validate(request_for(self.layout, f.ckpt))
        if verdict.validator_error:
            self.errors[f.key] = verdict.reason or "validator error"
            log.error(failed, path=str(f.ckpt.path), error=verdict.reason)
            return None
        self.errors.pop(f.key, None)
        return row_from(verdict, f.ckpt.role)

    async def verify_all(self) -> list[VerdictRow | None]:
        return [await self.verify(f) for f in self.scan()]

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
        if new is None:
            return None
        if not new.ok:
            new = replace(new, reason=f"changed on disk since it was verified (power loss?): {new.reason}")
        self._memory.pop(f.key, None)
        self._remember(new)
        return new

    def _remember(self, row: VerdictRow) -> None:
        self._memory[(row.path, row.size, row.mtime_ns, row.inode, row.ctime_ns)] = row
        if self.record and self.ledger is not None:
            self.ledger.add_verdict(row)
            self.ledger.commit()

    def candidates(self, files: Sequence[OnDisk]) -> list[Candidate]:
        result = []
        for f in files:
            row = self.known(f)
            if f.key in self.errors:  # (a verdict that could not be confirmed is no verdict)
                result.append(Candidate(f.ckpt, Status.UNKNOWN, self.errors[f.key]))
            elif row is None:
                result.append(Candidate(f.ckpt, Status.UNVERIFIED))
            elif row.ok:
                result.append(Candidate(with_content_step(f.ckpt, row.step), Status.OK))
            else:
                result.append(Candidate(with_content_step(f.ckpt, row.step), Status.REJECTED, row.reason))
        return result

    # --- verified copies ------------------------------------------------------------

    def snapshots(self) -> list[Snapshot]:
        return store.snapshots(self.state_dir) if self.keep_verified > 0 else []

    async def keep_copy(self, f: OnDisk, row: VerdictRow) -> None:
        """Keep a copy of a good checkpoint as it was verified, then apply retention."""
        step = with_content_step(f.ckpt, row.step).step
        if self.keep_verified <= 0 or not row.ok or step is None:
            return
        kept = self.snapshots()
        if any(s.original == f.ckpt.path and s.step == step for s in kept):
            return  # this state is kept already (e.g. seen again by a restarted supervisor)
        newest_steps = sorted({s.step for s in kept}, reverse=True)[: self.keep_verified]
        if len(newest_steps) >= self.keep_verified and step < newest_steps[-1]:
            return  # older than every copy kept: retention would drop it at once
        verdict = {"checksum": row.checksum, "step": row.step, "epoch": row.epoch, "format": row.format}
        snap = await asyncio.to_thread(
            store.snapshot,
            f.ckpt.path,
            self.state_dir,
            f.ckpt.role,
            step,
            in_place=f.ckpt.in_place,
            verdict=verdict,
            identity=(row.size, row.mtime_ns, row.inode),
        )
        if snap is None:
            log.info(
                "checkpoint changed since it was verified; its newer version is verified next",
                path=str(f.ckpt.path),
            )
            return
        await self.drop(retention(self.snapshots(), self.keep_verified))

    async def drop(self, snaps: Sequence[Snapshot]) -> None:
        """Remove some of our verified copies (never a trainer's file)."""
        for snap in snaps:
            await asyncio.to_thread(store.drop_snapshot, snap)

    # --- the plan -------------------------------------------------------------------

    def plan(self, below_step: int | None = None) -> Plan:
        return plan(
            self.layout,
            self.candidates(self.scan()),
            self.snapshots(),
            below_step=below_step,
            below_reason=f"saved at or after step {below_step}, when the loss had gone NaN/Inf",
        )

    async def apply(self, the_plan: Plan, attempt: int) -> None:
        """Move aside and restore as planned; record it all."""
        reasons = {str(m.path): m.reason for m in the_plan.moves}
        verdicts = {str(m.path): _verdict_dict(self._verdict_of(m.path)) for m in the_plan.moves}
        moved = await asyncio.to_thread(self._move_aside, the_plan, verdicts)
        restored = await asyncio.to_thread(self._restore, the_plan)
        if self.ledger is None:
            return
        now = time.time()
        for original, dest in moved:
            self.ledger.add_quarantined(now, original, dest, reasons[original])
            self.ledger.add_event(
                now, attempt, "quarantined", "warning", f"moved {original} to {dest}: {reasons[original]}"
            )
        for row in restored:
            self._remember(row)
        self.record_plan(the_plan, attempt)

    def record_plan(self, the_plan: Plan, attempt: int) -> None:
        """Keep the plan (carried out or refused) in the ledger."""
        if self.ledger is None:
            return
        detail = {
            "target": {role: str(p) for role, p in the_plan.target.items()},
            "moves": [{"path": str(m.path), "reason": m.reason} for m in the_plan.moves],
            "restores": [{"from": str(r.copy), "to": str(r.path), "step": r.step} for r in the_plan.restores],
            "problem": the_plan.problem,
        }
        summary, target_step = the_plan.summary(), the_plan.target_step
        self.ledger.add_plan(
            time.time(), attempt, target_step, the_plan.ok, summary, json.dumps(detail, sort_keys=True)
        )
        self.ledger.commit()

    def _move_aside(self, the_plan: Plan, verdicts: Mapping[str, object]) -> list[tuple[str, str]]:
        """Runs in a thread: files only, no ledger."""
        moved = []
        now = store.now_utc()
        for move in the_plan.moves:
            if not move.path.exists():
                continue
            details = {"verdict": verdicts.get(str(move.path))}
            dest = store.quarantine(move.path, self.state_dir, move.reason, details, now)
            log.warning("moved a checkpoint aside", path=str(move.path), to=str(dest), reason=move.reason)
            moved.append((str(move.path), str(dest)))
        return moved

    def _restore(self, the_plan: Plan) -> list[VerdictRow]:
        """Runs in a thread: files only; returns the verdicts to record for the copies."""
        rows = []
        for r in the_plan.restores:
            store.restore(r.copy, r.path)
            st = os.stat(r.path)
            log.info("restored a verified copy", path=str(r.path), step=r.step)
            role = next((role for role, p in the_plan.target.items() if p == r.path), None)
            rows.append(
                VerdictRow(
                    path=str(r.path),
                    size=st.st_size,
                    mtime_ns=st.st_mtime_ns,
                    inode=st.st_ino,
                    ok=True,
                    reason=None,
                    step=r.step,
                    epoch=store.snapshot_epoch(r.copy),
                    role=role,
                    checksum=None,
                    format=None,
                    seconds=0.0,
                    verified_at=time.time(),
                    ctime_ns=st.st_ctime_ns,
                )
            )
        return rows

    def _verdict_of(self, path: Path) -> VerdictRow | None:
        on_disk = stat_checkpoint(self.layout, path)
        return self.known(on_disk) if on_disk is not None else None


def _verdict_dict(row: VerdictRow | None) -> dict[str, object] | None:
    if row is None:
        return None
    return {"ok": row.ok, "reason": row.reason, "step": row.step, "checksum": row.checksum, "size": row.size}
