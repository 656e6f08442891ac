"""A validator worker that hangs on one named checkpoint: the environment that makes it so,
and what its workers noted.

The directory holds a sitecustomize that Python runs at start-up when the directory is on
PYTHONPATH. The supervisor starts its validator worker with its own environment, so a
test sets these variables for the supervisor (or the ValidatorClient) it starts, and the
worker, and only it, stalls on that one path.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.support.stalling_worker.sitecustomize import STALL_MARK, STALL_ON

HERE = Path(__file__).parent


def stalling_env(stall_on: Path, mark: Path) -> dict[str, str]:
    """The variables that make the worker stall on `stall_on`, its workers noting in `mark`."""
    rest = os.environ.get("PYTHONPATH")
    return {
        "PYTHONPATH": os.pathsep.join([str(HERE), *([rest] if rest else [])]),
        STALL_ON: str(stall_on),
        STALL_MARK: str(mark),
    }


def noted(mark: Path, what: str) -> int:
    """How many times workers noted `what` ("started", "ready", "stalled") so far."""
    try:
        lines = mark.read_text().splitlines()
    except FileNotFoundError:
        return 0
    return sum(line.split()[0] == what for line in lines)
