"""Checkpoint bookkeeping shared by the daemon and the CLI: what is on disk, what the
validator said about each file version, the resume plan, and carrying it out.

File I/O that can take a while (copies) runs in a thread; the ledger is only touched
from the caller's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import structlog

from supervisor.checkpoints import copies, store
from supervisor.checkpoints.entries import Kind, describe, kind_of
from supervisor.checkpoints.pinned import DirectoryChanged, PinnedDir, open_below
from supervisor.checkpoints.plan import Candidate, Plan, Snapshot, Status, plan, retention, with_content_step
from supervisor.checkpoints.shapes import shape_change
from supervisor.core.file_version import FileVersion, VersionKey
from supervisor.ledger import Ledger, VerdictRow
from supervisor.outputs.reporter import Report
from supervisor.process.writers import writers_of
from supervisor.validator.client import EMPTY, ValidationRequest, ValidatorClient, Verdict
from trainer_adapters.base import Layout, NamedCheckpoint

log = structlog.get_logger("supervisor.checkpoints")

DEFAULT_RESERVE_BYTES = 512 * 1024 * 1024
SHAPES_META = "model_shapes:"  # ledger meta, per role: a ShapeReference


@dataclass(frozen=True)
class OnDisk:
    """An entry named like a checkpoint, as `lstat` sees it (a link is never followed)."""

    ckpt: NamedCheckpoint
    version: FileVersion
    kind: Kind = Kind.FILE

    @property
    def key(self) -> VersionKey:
        return (str(self.ckpt.path), self.version)

    @property
    def judged(self) -> bool:
        """Whether the validator is asked about it: a regular file the trainer may resume
        from (not a link, a directory, a FIFO..., nor a stray file in its way)."""
        return self.kind is Kind.FILE and self.ckpt.interferes is None


SHAPES_DIFFER = "the model's keys or shapes differ"  # how a shape rejection begins
CHANGED_REREADS = 3  # reads of a file that changes under each one, before it is unknown


@dataclass(frozen=True)
class Unsettled:
    """No verdict: the file was caught while it was being written. Read it again once
    it is quiet; nothing about this version is recorded."""

    reason: str


def _shape_rejection(row: VerdictRow) -> bool:
    """Rejected for its model's shapes alone: judged again where the change is accepted."""
    return not row.ok and (row.reason or "").startswith(SHAPES_DIFFER)


@dataclass(frozen=True)
class ShapeReference:
    """The model keys and shapes a role's checkpoints must have, and the file they are
    from (kept in the ledger's meta, one per role)."""

    path: str
    mtime_ns: int
    shapes: dict[str, list[int]]

    def dump(self) -> str:
        return json.dumps({"path": self.path, "mtime_ns": self.mtime_ns, "shapes": self.shapes})

    @classmethod
    def parse(cls, stored: str) -> ShapeReference | None:
        try:
            data = json.loads(stored)
            shapes = {str(k): [int(n) for n in v] for k, v in data["shapes"].items()}
            return cls(str(data["path"]), int(data.get("mtime_ns", 0)), shapes)
        except (ValueError, KeyError, TypeError, AttributeError):
            return None


def stat_checkpoint(layout: Layout, path: Path) -> OnDisk | None:
    """The entry as a resume checkpoint of this layout, or None (not one, or gone)."""
    ckpt = layout.parse(path)
    if ckpt is None:
        return None
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return OnDisk(ckpt, FileVersion.of(st), kind_of(st.st_mode))


def listing(directory: Path, recursive: bool) -> Iterator[Path]:
    """Every entry below `directory` in directory order (what the trainer's `os.listdir`
    and `glob` see, and the order its ties follow); only real directories are entered."""
    stack = [directory]
    while stack:
        folder = stack.pop()
        with contextlib.suppress(OSError), os.scandir(folder) as entries:
            below = []
            for entry in entries:
                yield Path(entry.path)
                with contextlib.suppress(OSError):
                    if recursive and entry.is_dir(follow_symlinks=False):
                        below.append(Path(entry.path))
            stack.extend(reversed(below))


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
        model_key=expect.model_key,
        each_item=expect.each_item,
        when_not_empty=expect.when_not_empty,
        finite_except=expect.finite_except,
    )


@dataclass(frozen=True)
class Applied:
    """What carrying out a plan did: why each move or restore that did not happen did not
    (`kept`), and whether anything was moved or restored at all (`carried`)."""

    kept: list[str]
    carried: bool


def validated_globals(layout: Layout) -> tuple[str, ...]:
    """Every global the validator allows in this layout's checkpoints, any role."""
    allowed: list[str] = []
    for role in layout.roles:
        for name in layout.expect(NamedCheckpoint(Path("checkpoint"), role, None)).allowed_globals:
            if name not in allowed:
                allowed.append(name)
    return tuple(allowed)


def row_from(verdict: Verdict, role: str | None) -> VerdictRow:
    return VerdictRow(
        path=verdict.path,
        version=verdict.version,
        ok=verdict.ok,
        reason=verdict.reason,
        step=verdict.step,
        epoch=verdict.epoch,
        role=role,
        checksum=verdict.checksum,
        format=verdict.format,
        seconds=verdict.seconds,
        verified_at=time.time(),
        needs_globals=verdict.needs_globals,
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
        self.keep_verified = keep_verified
        self.record = record and ledger is not None
        self._memory: dict[VersionKey, VerdictRow] = {}
        # After a reboot: verdicts older than this may have been read from a page cache
        # that never reached the disk; a plan's target is read again before it is trusted.
        self.recheck_before: float | None = None
        # Files the validator failed on (crash, timeout): not verdicts, retried next time.
        self.errors: dict[VersionKey, str] = {}
        # Free space kept on the state filesystem for the ledger: no copy eats into it.
        self.reserve_bytes = reserve_bytes
        self._report = report or _log_only
        self._copies_refused = False  # said once until a copy is made again
        self.accept_model_change = accept_model_change
        self.unit = unit  # what the trainer's states count, for what the plan says
        self._shape_references: dict[str, ShapeReference | None] = {}

    def copy_refused(self, message: str) -> None:
        """A verified copy could not be kept (a full or failing state disk): warned once
        until copies work again; supervision goes on without it."""
        if self._copies_refused:
            log.warning(message)
        else:
            self._report("disk_space", "warning", message)
        self._copies_refused = True

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
        if row is not None and not (self.accept_model_change and _shape_rejection(row)):
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

    # --- verified copies ------------------------------------------------------------

    def snapshots(self) -> list[Snapshot]:
        return copies.snapshots(self.state_dir) if self.keep_verified > 0 else []

    async def keep_copy(self, f: OnDisk, row: VerdictRow, pinned: PinnedDir | None = None) -> None:
        """Keep a copy of a good checkpoint as it was verified, then apply retention. A
        newer version of a name already kept at its step (re-saved after a resume)
        replaces the older copy. `pinned`: the checkpoint directory, read through."""
        step = with_content_step(f.ckpt, row.step).step
        if self.keep_verified <= 0 or not row.ok or step is None or not f.judged:
            return
        kept = self.snapshots()
        same = [s for s in kept if s.original == f.ckpt.path and s.step == step]
        if same and (row.checksum is None or all(s.checksum == row.checksum for s in same)):
            return  # this version is kept already (e.g. seen again by a restarted supervisor)
        newest_steps = sorted({s.step for s in kept}, reverse=True)[: self.keep_verified]
        if len(newest_steps) >= self.keep_verified and step < newest_steps[-1]:
            return  # older than every copy kept: retention would drop it at once
        room = copies.room_for(self.state_dir, f.version.size, self.reserve_bytes)
        if room is not None:
            self.copy_refused(f"no verified copy of {f.ckpt.path} kept: {room}")
            return
        verdict = {
            "checksum": row.checksum,
            "step": row.step,
            "epoch": row.epoch,
            "format": row.format,
            "needs_globals": list(row.needs_globals),
        }
        with self._directory(f.ckpt.path.parent, pinned) as dir_fd:
            try:
                snap = await asyncio.to_thread(
                    copies.snapshot,
                    f.ckpt.path,
                    self.state_dir,
                    f.ckpt.role,
                    step,
                    in_place=f.ckpt.in_place,
                    verdict=verdict,
                    version=row.version,
                    dir_fd=dir_fd,
                )
            except OSError as exc:  # a full or failing state disk costs the copy, never the run
                self.copy_refused(f"no verified copy of {f.ckpt.path} kept: {exc.strerror or exc}")
                return
        if snap is None:
            log.info(
                "checkpoint changed since it was verified; its newer version is verified next",
                path=str(f.ckpt.path),
            )
            return
        self._copies_refused = False
        await self.drop(retention(self.snapshots(), self.keep_verified))

    async def drop(self, snaps: Sequence[Snapshot]) -> None:
        """Remove some of our verified copies (never a trainer's file)."""
        for snap in snaps:
            await asyncio.to_thread(copies.drop_snapshot, snap)

    # --- the plan -------------------------------------------------------------------

    def plan(self, below_step: int | None = None, writing: Mapping[Path, str] | None = None) -> Plan:
        return plan(
            self.layout,
            self.candidates(self.scan(), writing),
            [snap for snap in self.snapshots() if self._in_directories(snap.original)],
            below_step=below_step,
            below_reason=f"saved at or after {self.unit} {below_step}, when the loss had gone NaN/Inf",
            unit=self.unit,
        )

    async def apply(self, the_plan: Plan, attempt: int, pinned: PinnedDir | None = None) -> Applied:
        """Move aside and restore as planned (through the pinned directory, when given);
        record what really happened, and return it."""
        reasons = {str(m.path): m.reason for m in the_plan.moves}
        verdicts = {str(m.path): _verdict_dict(self.verdict_of(m.path)) for m in the_plan.moves}
        results = await asyncio.to_thread(self._move_aside, the_plan, verdicts, pinned)
        kept = [
            f"could not move {original} aside: {result.why_not}"
            for original, result in results
            if not result.moved
        ]
        restored: list[VerdictRow] = []
        if not kept:  # (a restore never goes over a file that is still there)
            restored, failed = await asyncio.to_thread(self._restore, the_plan, pinned)
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

    def _move_aside(
        self, the_plan: Plan, verdicts: Mapping[str, object], pinned: PinnedDir | None
    ) -> list[tuple[str, store.MoveResult]]:
        """Runs in a thread: files only, no ledger. A move that fails (a full state disk, a
        directory swapped under us) is a result too: the moves before it stay recorded."""
        results = []
        now = store.now_utc()
        for move in the_plan.moves:
            if not os.path.lexists(move.path):
                continue
            details = {"verdict": verdicts.get(str(move.path))}
            try:
                with self._directory(move.path.parent, pinned) as dir_fd:
                    result = store.quarantine(
                        move.path, self.state_dir, move.reason, details, now, dir_fd=dir_fd
                    )
            except (OSError, DirectoryChanged) as exc:
                result = store.MoveResult(move.path, False, _why(exc))
            results.append((str(move.path), result))
        return results

    def _restore(self, the_plan: Plan, pinned: PinnedDir | None) -> tuple[list[VerdictRow], list[str]]:
        """Runs in a thread: files only; returns the verdicts to record for the copies put
        back, and why each that could not be put back was not."""
        rows, failed = [], []
        for r in the_plan.restores:
            try:
                with self._directory(r.path.parent, pinned, create=True) as dir_fd:
                    st = copies.restore(r.copy, r.path, dir_fd=dir_fd)
            except (OSError, DirectoryChanged) as exc:
                failed.append(f"could not restore {r.path} from {r.copy}: {_why(exc)}")
                continue
            log.info("restored a verified copy", path=str(r.path), step=r.step)
            role = next((role for role, p in the_plan.target.items() if p == r.path), None)
            verified = copies.snapshot_verdict(r.copy)
            rows.append(
                VerdictRow(
                    path=str(r.path),
                    version=FileVersion.of(st),
                    ok=True,
                    reason=None,
                    step=r.step,
                    epoch=verified.get("epoch") if isinstance(verified.get("epoch"), int) else None,
                    role=role,
                    checksum=verified.get("checksum") if isinstance(verified.get("checksum"), str) else None,
                    format=None,
                    seconds=0.0,
                    verified_at=time.time(),
                    needs_globals=tuple(str(g) for g in verified.get("needs_globals") or ()),
                )
            )
        return rows, failed

    @contextlib.contextmanager
    def _directory(
        self, folder: Path, pinned: PinnedDir | None, *, create: bool = False
    ) -> Iterator[int | None]:
        """The descriptor to move and restore through: the pinned checkpoint directory
        (checked to be the one pinned at start), or the folder below it (`create`: made
        where it is missing)."""
        if pinned is None:
            yield None
            return
        if not folder.is_relative_to(pinned.path):
            raise DirectoryChanged(
                f"{folder} is not in the checkpoint directory {pinned.path}: nothing goes there"
            )
        with pinned.opened() as root_fd:
            if folder == pinned.path:
                yield root_fd
                return
            fd = open_below(root_fd, pinned.path, folder, create=create)
            try:
                yield fd
            finally:
                os.close(fd)

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


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror if not exc.filename else f"{exc.strerror} ({exc.filename})"
    return str(exc)


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
