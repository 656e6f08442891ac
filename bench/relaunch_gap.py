#!/usr/bin/env python3
"""Crash -> relaunch gap: how long a crashed trainer stays down before its next start.

The trainer is bench/crash_script.py. Right after interpreter start-up it appends
`start <time.time()>` to a file, then `exit <time.time()>` just before it dies with exit
code 1; its (N+1)-th start exits 0. Gap i = start_{i+1} - exit_i, so every gap holds
the launcher's own reaction (noticing the exit, bookkeeping, spawning) plus the
interpreter's start-up up to the script's first line.

Three launchers run it, one after the other, in this one invocation:

  shell loop   `for i in 1..N+1; do python crash_script.py ...; done`: the floor
               (process exit + fork/exec + interpreter start-up, nothing else);
  ours         `train-supervisor run` with backoff 0 (relaunch at once);
  torchrun     `torchrun --standalone --nproc-per-node=1 --max-restarts=N
               --monitor-interval=<its default>` (the default is read from torch's own
               argument parser).

For ours, the ledger's attempt rows (ended_at, started_at, both time.time()) split each
gap into: exit -> attempt end recorded (noticing the exit, sweeping the session,
draining the pipes), end recorded -> next attempt begun (log line and ledger rows), and
next attempt begun -> trainer's first line (ledger commit, fork/exec, interpreter
start-up).

Prints the median, p90 and max gap per launcher and the ratios ours/torchrun and
ours/shell loop, next to the target.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
CRASH_SCRIPT = BENCH_DIR / "crash_script.py"
PYTHON = sys.executable
SUPERVISOR = Path(sys.executable).parent / "train-supervisor"
TORCHRUN = Path(sys.executable).parent / "torchrun"
TARGET_VS_TORCHRUN = 0.25

CONFIG = """\
[run]
name = "bench-relaunch-gap"
command = {command}
cwd = "{cwd}"
state_dir = "{state_dir}"

[restart]
backoff_initial_s = 0
backoff_max_s = 0
max_attempts_without_progress = 1000
stable_after_s = 600

[stop]
grace_s = 5
"""


@dataclass(frozen=True)
class Result:
    name: str
    gaps_s: list[float]
    wall_s: float
    note: str = ""


def read_times(path: Path, relaunches: int) -> tuple[list[float], list[float]]:
    """The `start` and `exit` times the crash script wrote, checked for completeness."""
    starts: list[float] = []
    exits: list[float] = []
    for line in path.read_text().splitlines():
        kind, _, value = line.partition(" ")
        (starts if kind == "start" else exits).append(float(value))
    if len(starts) != relaunches + 1 or len(exits) != relaunches:
        raise RuntimeError(
            f"{path}: expected {relaunches + 1} starts and {relaunches} exits, "
            f"got {len(starts)} and {len(exits)}"
        )
    return starts, exits


def gaps(path: Path, relaunches: int) -> list[float]:
    starts, exits = read_times(path, relaunches)
    return [starts[i + 1] - exits[i] for i in range(relaunches)]


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def run_checked(
    name: str, argv: list[str], log: Path, timeout_s: float, env: dict[str, str] | None = None
) -> float:
    """Run `argv` with output to `log`; its wall time. Raises with the log's tail on failure."""
    begin = time.monotonic()
    with log.open("wb") as out:
        try:
            proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, timeout=timeout_s, env=env)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{name}: still running after {timeout_s:g}s; log: {log}") from None
    wall = time.monotonic() - begin
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise RuntimeError(f"{name}: exit code {proc.returncode}; last output:\n{tail}")
    return wall


def crash_command(python: str, times: Path, relaunches: int) -> list[str]:
    return [python, str(CRASH_SCRIPT), str(times), str(relaunches)]


def measure_shell(work: Path, python: str, relaunches: int, timeout_s: float) -> Result:
    times = work / "shell.times"
    loop = f'for i in $(seq 1 {relaunches + 1}); do "$@"; done'
    wall = run_checked(
        "shell loop",
        ["/bin/sh", "-c", loop, "sh", *crash_command(python, times, relaunches)],
        work / "shell.log",
        timeout_s,
    )
    return Result("shell loop (floor)", gaps(times, relaunches), wall)


def measure_ours(
    work: Path, python: str, relaunches: int, timeout_s: float
) -> tuple[Result, dict[str, list[float]]]:
    times = work / "ours.times"
    state_dir = work / "state"
    config = work / "bench.toml"
    command = "[" + ", ".join(f'"{part}"' for part in crash_command(python, times, relaunches)) + "]"
    config.write_text(CONFIG.format(command=command, cwd=work, state_dir=state_dir))
    wall = run_checked(
        "train-supervisor", [str(SUPERVISOR), "run", "-c", str(config)], work / "ours.log", timeout_s
    )
    result = Result("train-supervisor", gaps(times, relaunches), wall)
    return result, breakdown(state_dir, times, relaunches)


def breakdown(state_dir: Path, times: Path, relaunches: int) -> dict[str, list[float]]:
    """Split each of our gaps at the ledger's ended_at (attempt i) and started_at (attempt i+1)."""
    starts, exits = read_times(times, relaunches)
    conn = sqlite3.connect(f"{(state_dir / 'ledger.sqlite3').as_uri()}?mode=ro", uri=True)
    try:
        query = "SELECT n, started_at, ended_at FROM attempts"
        rows = {n: (started, ended) for n, started, ended in conn.execute(query)}
    finally:
        conn.close()
    parts: dict[str, list[float]] = {
        "exit -> end recorded": [],
        "-> next begun": [],
        "-> trainer's 1st line": [],
    }
    for i in range(relaunches):
        ended = rows[i + 1][1]
        begun = rows[i + 2][0]
        parts["exit -> end recorded"].append(ended - exits[i])
        parts["-> next begun"].append(begun - ended)
        parts["-> trainer's 1st line"].append(starts[i + 1] - begun)
    return parts


def torchrun_monitor_default() -> float:
    """torchrun's --monitor-interval default, from torch's own argument parser."""
    out = subprocess.run(
        [
            PYTHON,
            "-c",
            "from torch.distributed.run import get_args_parser as p; "
            "print(p().get_default('monitor_interval'))",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return float(out.stdout.strip())


def measure_torchrun(work: Path, python: str, relaunches: int, timeout_s: float) -> Result:
    interval = torchrun_monitor_default()
    times = work / "torchrun.times"
    argv = [
        str(TORCHRUN),
        "--standalone",
        "--nnodes=1",
        "--nproc-per-node=1",
        f"--max-restarts={relaunches}",
        f"--monitor-interval={interval:g}",
    ]
    if python == PYTHON:
        argv += [str(CRASH_SCRIPT), str(times), str(relaunches)]  # torchrun's usual form
    else:  # the same interpreter as the other launchers
        argv += ["--no-python", *crash_command(python, times, relaunches)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    wall = run_checked("torchrun", argv, work / "torchrun.log", timeout_s, env=env)
    return Result("torchrun", gaps(times, relaunches), wall, f"--monitor-interval={interval:g} (default)")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f}"


def report(python: str, relaunches: int, results: list[Result], parts: dict[str, list[float]]) -> None:
    by_name = {r.name: r for r in results}
    print()
    print(f"relaunch gap: trainer exit (code 1) -> its next start, {relaunches} relaunches per launcher")
    print(f"  trainer: {python} {CRASH_SCRIPT.name}")
    print(f"  {'launcher':<22}{'median':>8}{'p90':>9}{'max':>9}  ms   {'wall':>6}")
    for r in results:
        print(
            f"  {r.name:<22}{ms(statistics.median(r.gaps_s))} {ms(percentile(r.gaps_s, 90))} "
            f"{ms(max(r.gaps_s))}      {r.wall_s:5.1f}s  {r.note}"
        )
    ours = by_name["train-supervisor"]
    ours_med, ours_p90 = statistics.median(ours.gaps_s), percentile(ours.gaps_s, 90)
    print("  ratios (median / p90):")
    if "torchrun" in by_name:
        t = by_name["torchrun"]
        print(
            f"    ours / torchrun    {ours_med / statistics.median(t.gaps_s):6.3f} / "
            f"{ours_p90 / percentile(t.gaps_s, 90):6.3f}   (target <= {TARGET_VS_TORCHRUN:g})"
        )
    else:
        print("    ours / torchrun    n/a (torchrun was not measured)")
    s = by_name["shell loop (floor)"]
    print(
        f"    ours / shell loop  {ours_med / statistics.median(s.gaps_s):6.3f} / "
        f"{ours_p90 / percentile(s.gaps_s, 90):6.3f}   (1.0 would be no overhead over a bare loop)"
    )
    floor = statistics.median(s.gaps_s)
    if "torchrun" in by_name:
        over_t = statistics.median(by_name["torchrun"].gaps_s) - floor
        print(
            f"    above the floor    ours {(ours_med - floor) * 1000:+.1f} ms, torchrun {over_t * 1000:+.1f} ms "
            f"(median minus the shell loop's median; ratio {(ours_med - floor) / over_t:+.3f})"
        )
    print("  where our gap goes (median / p90 ms, from the ledger's timestamps):")
    for label, values in parts.items():
        print(f"    {label:<24}{ms(statistics.median(values))} {ms(percentile(values, 90))}")
    print(
        f"    (the shell loop's whole gap, for comparison: {ms(statistics.median(s.gaps_s)).strip()} ms median)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--relaunches", type=int, default=20, help="crashes (= relaunches) per launcher")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds allowed per launcher")
    parser.add_argument(
        "--trainer-python",
        default=PYTHON,
        help="interpreter for the crash script (default: this one); its start-up is part of every gap",
    )
    parser.add_argument("--skip-torchrun", action="store_true", help="measure only ours and the shell loop")
    args = parser.parse_args()
    if args.relaunches < 1:
        parser.error("--relaunches must be >= 1")
    if not SUPERVISOR.exists():
        parser.error(f"{SUPERVISOR} not found: run with the project's venv python")
    do_torchrun = not args.skip_torchrun
    if do_torchrun and not TORCHRUN.exists():
        print(f"note: {TORCHRUN} not found (torch not installed?): torchrun is not measured", file=sys.stderr)
        do_torchrun = False

    work = Path(tempfile.mkdtemp(prefix="relaunch-gap-"))
    try:
        # Warm the page cache for the interpreter and the script before anything is timed.
        python = args.trainer_python
        subprocess.run(crash_command(python, work / "warmup.times", 0), check=True, timeout=30)
        results = [measure_shell(work, python, args.relaunches, args.timeout)]
        ours, parts = measure_ours(work, python, args.relaunches, args.timeout)
        results.append(ours)
        if do_torchrun:
            results.append(measure_torchrun(work, python, args.relaunches, args.timeout))
        report(python, args.relaunches, results, parts)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
