"""The ledger's checkpoint tables: verdicts per file version, plans, quarantine moves, rollbacks."""

from __future__ import annotations

import json
from dataclasses import replace

from supervisor.core.file_version import FileVersion
from supervisor.core.health import Carry
from supervisor.ledger.rows import _INSERT_VERDICT, _SELECT_VERDICTS, VerdictRow, _verdict
from supervisor.ledger.storage import Storage
from supervisor.ledger.text import counter, path_in, path_out

_ROLLBACKS = "rollbacks"  # meta: [[below_step, at], ...], the states rollbacks gave up on


class CheckpointRecords(Storage):
    def add_verdict(self, row: VerdictRow) -> None:
        self._write(
            _INSERT_VERDICT,
            {
                "path": path_in(row.path),
                "size": row.version.size,
                "mtime_ns": row.version.mtime_ns,
                "inode": row.version.inode,
                "ctime_ns": row.version.ctime_ns,
                "ok": int(row.ok),
                "reason": self._text(row.reason) if row.reason is not None else None,
                "step": counter(row.step),
                "epoch": counter(row.epoch),
                "role": row.role,
                "checksum": row.checksum,
                "format": row.format,
                "seconds": row.seconds,
                "verified_at": row.verified_at,
                "globals": json.dumps(list(row.needs_globals)) if row.needs_globals else None,
            },
        )

    def verdict(self, path: str, version: FileVersion) -> VerdictRow | None:
        """The verdict for exactly this file version; a file changed since has none."""
        row = self._one(
            _SELECT_VERDICTS + " WHERE path = ? AND size = ? AND mtime_ns = ? AND inode = ? AND ctime_ns = ?",
            (path_in(path), version.size, version.mtime_ns, version.inode, version.ctime_ns),
        )
        return _verdict(row) if row else None

    def verdicts(self, limit: int = 200) -> list[VerdictRow]:
        rows = self._all(_SELECT_VERDICTS + " ORDER BY verified_at DESC LIMIT ?", (limit,))
        return [_verdict(r) for r in reversed(rows)]

    def verified_at_step(self, step: int) -> list[VerdictRow]:
        """The newest good verdict of each file whose content is at `step`."""
        rows = self._all(
            _SELECT_VERDICTS + " WHERE ok = 1 AND step = ? ORDER BY verified_at", (counter(step),)
        )
        return list({row.path: row for row in map(_verdict, rows)}.values())

    def validation_times(self) -> list[float]:
        """How long each recorded checkpoint validation took (seconds). A restored verified
        copy is recorded as good without a validation (no format): not counted."""
        rows = self._all("SELECT seconds FROM checkpoints WHERE ok = 0 OR format IS NOT NULL")
        return [row["seconds"] for row in rows]

    # --- plans and quarantine ---------------------------------------------------------

    def add_plan(
        self, at: float, attempt: int, target_step: int | None, ok: bool, summary: str, detail: str
    ) -> None:
        self._write(
            "INSERT INTO plans (at, attempt, target_step, ok, summary, detail) VALUES (?, ?, ?, ?, ?, ?)",
            (at, attempt, counter(target_step), int(ok), self._text(summary), self._text(detail)),
        )

    def last_plan(self) -> tuple[float, int, str] | None:
        row = self._one("SELECT at, attempt, summary FROM plans ORDER BY id DESC LIMIT 1")
        return (row["at"], row["attempt"], row["summary"]) if row else None

    def plans(self) -> list[tuple[int, int | None, bool, str]]:
        """Every plan, oldest first: (attempt, target step, ok, detail as JSON)."""
        rows = self._all("SELECT attempt, target_step, ok, detail FROM plans ORDER BY id")
        return [(r["attempt"], r["target_step"], bool(r["ok"]), r["detail"]) for r in rows]

    def add_quarantined(self, at: float, original: str, moved_to: str, reason: str) -> None:
        self._write(
            "INSERT INTO quarantined (at, original, moved_to, reason) VALUES (?, ?, ?, ?)",
            (at, path_in(original), path_in(moved_to), self._text(reason)),
        )

    def quarantine_destinations(self) -> set[str]:
        """Where every recorded quarantine move put its file."""
        return {path_out(row["moved_to"]) for row in self._all("SELECT moved_to FROM quarantined")}

    # --- complete states and rollbacks ------------------------------------------------

    def newest_complete_state(self, roles: tuple[str, ...]) -> int | None:
        """The highest step at which a file of every role was ever verified: a complete
        resume state existed there (a lone G never was one). States a rollback gave up on
        (verified before it, at or after its bound) are not counted."""
        disowned = self.rollbacks()
        found: dict[int, set[str]] = {}
        for row in self._all(
            "SELECT step, role, verified_at FROM checkpoints"
            " WHERE ok = 1 AND step IS NOT NULL AND role IS NOT NULL"
        ):
            step = row["step"]
            if not any(step >= bound and row["verified_at"] <= at for bound, at in disowned):
                found.setdefault(step, set()).add(row["role"])
        complete = [step for step, have in found.items() if set(roles) <= have]
        return max(complete) if complete else None

    def rollback_carried_out(self) -> None:
        """The pending NaN rollback was carried out outside the daemon (`plan --apply`):
        the next supervisor does not carry it out again over newer saves."""
        row = self._one("SELECT carry FROM run WHERE id = 1")
        if row is not None and row["carry"]:
            carry = replace(Carry.from_json(row["carry"]), nan_below=None)
            self._write("UPDATE run SET carry = ? WHERE id = 1", (carry.to_json(),))

    def add_rollback(self, below_step: int, at: float) -> None:
        """A rollback gave up on every state verified so far at or after `below_step`."""
        self.set_meta(_ROLLBACKS, json.dumps([*self.rollbacks(), [below_step, at]]))

    def rollbacks(self) -> list[tuple[int, float]]:
        try:
            kept = json.loads(self.meta(_ROLLBACKS) or "[]")
            return [(int(bound), float(at)) for bound, at in kept]
        except (ValueError, TypeError):
            return []
