"""Model shape drift: a checkpoint whose model keys or tensor shapes differ from the run's
previous verified checkpoint of the same role. GPT-SoVITS, VITS and Seed-VC load with
`strict=False` (or drop mis-shaped keys themselves) and train what did not fit from
scratch, silently: such a file verifies, then resumes a partly untrained model. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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
