"""Model shape drift: a checkpoint whose model keys or tensor shapes differ from the run's
previous verified checkpoint of the same role. GPT-SoVITS, VITS and Seed-VC load with
`strict=False` (or drop mis-shaped keys themselves) and train what did not fit from
scratch, silently: such a file verifies, then resumes a partly untrained model. Pure;
`ShapeReference` is the model a role's checkpoints must have, as the ledger keeps it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from supervisor.ledger import VerdictRow

SHOWN = 3  # keys named per kind of change


def shape_change(before: Mapping[str, Sequence[int]], after: Mapping[str, Sequence[int]]) -> str | None:
    """What changed from `before` to `after` ({key: shape}), in one line; None if nothing."""
    changed = [
        f"{key} {list(before[key])} -> {list(after[key])}"
        for key in before
        if key in after and list(before[key]) != list(after[key])
    ]
    missing = [key for key in before if key not in after]
    added = [key for key in after if key not in before]
    parts = []
    if changed:
        parts.append(f"{len(changed)} shape(s) changed: {_some(changed)}")
    if missing:
        parts.append(f"{len(missing)} key(s) gone: {_some(missing)}")
    if added:
        parts.append(f"{len(added)} new key(s): {_some(added)}")
    return "; ".join(parts) or None


def _some(items: list[str]) -> str:
    more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return ", ".join(items[:SHOWN]) + more


SHAPES_DIFFER = "the model's keys or shapes differ"  # how a shape rejection begins


def shape_rejection(row: VerdictRow) -> bool:
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
