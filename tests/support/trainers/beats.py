"""A trainer that reports through the heartbeat client and prints nothing else.

usage: beats.py STEPS STEP_S [FAULT_AT FAULT]: FAULT is "hang" (alive, silent from step
FAULT_AT on, once: a marker file in the cwd remembers it) or "nan" (the loss is nan from
FAULT_AT on, once). Saves nothing; exits 0 after STEPS steps.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

from supervisor.client import heartbeat


def main(steps: int, step_s: float, fault_at: int | None, fault: str | None) -> int:
    fired = Path(f"fault-{fault}.done")
    armed = fault is not None and not fired.exists()
    loss = 1.0
    for step in range(steps):
        if armed and step == fault_at:
            fired.write_text("1")
            if fault == "hang":
                signal.pause()
        bad = armed and fault == "nan" and fault_at is not None and step >= fault_at
        loss = float("nan") if bad else loss * 0.99
        heartbeat(step=step, loss=loss)
        time.sleep(step_s)
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    at = int(args[2]) if len(args) > 2 else None
    sys.exit(main(int(args[0]), float(args[1]), at, args[3] if len(args) > 3 else None))
