"""Keep every core busy, as another job on a training box does, beside a command or for
a while: `cpu_hog.py [--per-core N] [--seconds S] [-- command ...]`.

It starts N busy-loop processes per core (default 4: a load average near 4x the cores,
the 8-13 measured on a loaded 2-core machine), runs the command (or waits S seconds),
then kills and reaps every hog. A hog also dies when the hog script does (parent-death
signal), so no busy loop outlives it. Each hog runs in a session of its own, as another
job's processes do: with the kernel's autogroup scheduling (sched_autogroup_enabled) the
loops of one session share one group's CPU time, and would barely slow a trainer, which
the supervisor starts in a session of its own. Prints the command's wall time and the load averages
seen, and exits with the command's exit status.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

PR_SET_PDEATHSIG = 1
SPIN = "while True:\n    pass\n"


def _die_with_parent() -> None:
    """Run in each hog before it spins: SIGKILL it when the hog script goes away."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def start_hogs(count: int) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen(
            [sys.executable, "-c", SPIN],
            preexec_fn=_die_with_parent,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
        )
        for _ in range(count)
    ]


def stop_hogs(hogs: Sequence[subprocess.Popen[bytes]]) -> None:
    for hog in hogs:
        hog.kill()
    for hog in hogs:
        hog.wait()


def loads() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def run_beside(command: Sequence[str], seconds: float | None) -> int:
    """The command's exit status (0 for a plain wait), with the hogs running throughout."""
    if not command:
        assert seconds is not None
        time.sleep(seconds)
        return 0
    child = subprocess.Popen(list(command))
    try:
        return child.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        print(f"cpu_hog: {command[0]} still running after {seconds:g}s: SIGTERM", file=sys.stderr)
        child.terminate()
        return child.wait()
    finally:  # interrupted (Ctrl-C, SIGTERM): the command goes too, and is reaped
        if child.poll() is None:
            child.terminate()
            child.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-core", type=int, default=4, help="busy loops per core (default 4)")
    parser.add_argument("--seconds", type=float, help="how long (required without a command)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run beside")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command and args.seconds is None:
        parser.error("give a command after --, or --seconds")
    count = args.per_core * (os.cpu_count() or 1)
    # SIGTERM (e.g. from `timeout`) ends the hog script like Ctrl-C does, through `finally`.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    print(f"cpu_hog: {count} busy loops on {os.cpu_count()} cores; load average {loads()}", flush=True)
    hogs = start_hogs(count)
    started = time.monotonic()
    try:
        code = run_beside(command, args.seconds)
    except KeyboardInterrupt:
        code = 130
    finally:
        stop_hogs(hogs)
    elapsed = time.monotonic() - started
    print(f"cpu_hog: {elapsed:.1f}s beside the hogs, exit {code}; load average at the end {loads()}")
    return code


if __name__ == "__main__":
    sys.exit(main())
