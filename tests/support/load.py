"""How busy this machine is: a torch import timed once per test process, and the budgets
scaled from it, so that a test holds when every core is busy with another job."""

from __future__ import annotations

import functools
import subprocess
import sys
import time

# A fresh interpreter's `import torch` on an idle 2-core machine of the CI kind (1.3-1.8 s
# measured); 8-13 s there at a load average of 8-13.
IDLE_TORCH_IMPORT_S = 1.5


@functools.cache
def torch_import_s() -> float:
    """How long a fresh interpreter takes to import torch, timed at the first call."""
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", "import torch"], check=True, stdin=subprocess.DEVNULL)
    return time.monotonic() - started


def slowdown() -> float:
    """How many times slower than an idle CI machine this one is now (at least 1)."""
    return max(1.0, torch_import_s() / IDLE_TORCH_IMPORT_S)


def scaled(idle_s: float) -> float:
    """A budget that holds on an idle machine, stretched by how much slower this one is."""
    return idle_s * slowdown()


def torch_imports(count: float) -> float:
    """A budget for work that starts with a torch import (a validator worker, a trainer
    twin): `count` imports as timed here, and never below an idle machine's."""
    return count * max(torch_import_s(), IDLE_TORCH_IMPORT_S)
