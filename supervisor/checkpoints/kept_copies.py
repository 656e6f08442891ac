"""Our verified copies of good checkpoints in state_dir: kept as each is verified, within keep_verified and the state disk's reserve, dropped by retention."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import structlog

from supervisor.checkpoints import carry_out, copies
from supervisor.checkpoints.on_disk import OnDisk
from supervisor.checkpoints.pinned import PinnedDir
from supervisor.checkpoints.plan import Snapshot, retention, with_content_step
from supervisor.ledger import VerdictRow
from supervisor.outputs.reporter import Report

log = structlog.get_logger("supervisor.checkpoints")


class KeptCopies:
    def __init__(self, state_dir: Path, keep_verified: int, reserve_bytes: int, report: Report) -> None:
        self.state_dir = state_dir
        self.keep_verified = keep_verified
        # Free space kept on the state filesystem for the ledger: no copy eats into it.
        self.reserve_bytes = reserve_bytes
        self._report = report
        self._refused = False  # said once until a copy is made again

    def refused(self, message: str) -> None:
        """A verified copy could not be kept (a full or failing state disk): warned once
        until copies work again; supervision goes on without it."""
        if self._refused:
            log.warning(message)
        else:
            self._report("disk_space", "warning", message)
        self._refused = True

    def snapshots(self) -> list[Snapshot]:
        return copies.snapshots(self.state_dir) if self.keep_verified > 0 else []

    async def keep(self, f: OnDisk, row: VerdictRow, pinned: PinnedDir | None = None) -> None:
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
            self.refused(f"no verified copy of {f.ckpt.path} kept: {room}")
            return
        verdict = {
            "checksum": row.checksum,
            "step": row.step,
            "epoch": row.epoch,
            "format": row.format,
            "needs_globals": list(row.needs_globals),
        }
        with carry_out.directory_fd(f.ckpt.path.parent, pinned) as dir_fd:
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
                self.refused(f"no verified copy of {f.ckpt.path} kept: {exc.strerror or exc}")
                return
        if snap is None:
            log.info(
                "checkpoint changed since it was verified; its newer version is verified next",
                path=str(f.ckpt.path),
            )
            return
        self._refused = False
        await self.drop(retention(self.snapshots(), self.keep_verified))

    async def drop(self, snaps: Sequence[Snapshot]) -> None:
        """Remove some of our verified copies (never a trainer's file)."""
        for snap in snaps:
            await asyncio.to_thread(copies.drop_snapshot, snap)
