"""The targets bench scripts check: one line per claim (met / NOT met), and an exit status
that is non-zero when any claim in the run was missed, so `make bench` is a check."""

from __future__ import annotations

_missed: list[str] = []


def claim(what: str, measured: float, target: float, *, at_most: bool = True) -> bool:
    """Print whether `measured` is within `target` (at most, or at least) and remember a miss."""
    met = measured <= target if at_most else measured >= target
    bound = "<=" if at_most else ">="
    print(f"  claim: {what}: {measured:.3g} (target {bound} {target:g}): {'met' if met else 'NOT met'}")
    if not met:
        _missed.append(what)
    return met


def exit_status() -> int:
    """1 when a claim of this run was missed (and which), else 0."""
    if _missed:
        print(f"  {len(_missed)} claim(s) NOT met: {'; '.join(_missed)}")
        return 1
    return 0
