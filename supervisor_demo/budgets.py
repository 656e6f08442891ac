"""The demo's hang budgets, scaled from a torch import timed on this machine first: on a
busy machine the trainer starts, and a crashing one ends, several times slower than on an
idle one, and a budget that is short there would call a slow crash or a slow start a hang."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass

# The floors are the budgets of an idle machine: the trainer heartbeats every 0.04 s and
# imports torch in 1-2 s.
HANG_MIN_S = 3.0
STARTUP_MIN_S = 20.0
# A crashing trainer's exit takes a fraction of a torch import; a start takes a little more
# than one, and a busy machine's speed varies from one minute to the next.
HANG_IMPORTS = 2.0
STARTUP_IMPORTS = 5.0


@dataclass(frozen=True)
class Budgets:
    torch_import_s: float  # as timed just now, in a fresh interpreter
    hang_timeout_s: float  # [heartbeat] timeout_s
    startup_timeout_s: float  # [heartbeat] startup_timeout_s


def timed_torch_import_s() -> float:
    """How long a fresh interpreter (the trainer's) takes to import torch right now."""
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-c", "import torch"],
        check=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    return time.monotonic() - started


def scaled(torch_import_s: float) -> Budgets:
    return Budgets(
        torch_import_s=torch_import_s,
        hang_timeout_s=round(max(HANG_MIN_S, HANG_IMPORTS * torch_import_s), 1),
        startup_timeout_s=round(max(STARTUP_MIN_S, STARTUP_IMPORTS * torch_import_s), 1),
    )
