#!/usr/bin/env python3
"""Crash -> relaunch gap: how long a crashed trainer stays down before its next start.

The trainer is bench/crash_script.py. Right after interpreter start-up it appends
`start <time.time()>` to a file, then `exit <time.time()>` just before it dies with exit
code 1; its (N+1)-th start exits 0. Gap i = start_{i+1} - exit_i, so every gap holds
the launcher's own reaction (noticing the exit, bookkeeping, spawning) plus the
interpreter's start-up up to the script's first line.

Three launchers run it, N relaunches each, in this one invocation:

  shell loop   `for i in 1..N+1; do python crash_script.py ...; done`: the floor
               (process exit + fork/exec + interpreter start-up, nothing else);
  ours         `train-supervisor run` with backoff 0 (relaunch at once);
  torchrun     `torchrun --standalone --nproc-per-node=1 --max-restarts=N
               --monitor-interval=<its default>` (the default is read from torch's own
               argument parser).

The three take turns over --rounds rounds (the order rotates each round, so a slow
patch of the machine does not land on one launcher only); gaps are pooled over rounds.

For ours, the ledger's attempt rows (ended_at, started_at, both time.time()) split each
gap into: exit -> attempt end recorded (process teardown, noticing the exit, sweeping
the session, draining the pipes), end recorded -> next attempt begun (log line and
ledger rows), and next attempt begun -> trainer's first line (ledger commit,
fork/exec, interpreter start-up).

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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from _claims import claim, exit_status

BENCH_DIR = Path(__file__).resolve().parent
CRASH_SCRIPT = BENCH_DIR / "crash_script.py"
PYTHON = sys.executable
SUPERVISOR = Path(sys.executable).parent / "train-supervisor"
TORCHRUN = Path(sys.executable).parent / "torchrun"
TARGET_VS_TORCHRUN = 0.25

SHELL, OURS, TORCHRUN_NAME = "shell loop (floor)", "train-supervisor", "torchrun"
PARTS = ("exit -> end recorded", "-> next attempt begun", "-> trainer's 1st line")

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


@dataclass
class Result:
    name: str
    gaps_s: list[float] = field(default_factory=list)
    walls_s: list[float] = field(default_factory=list)
    note: str = ""


@dataclass(frozen=True)
class Setup:
    python: str
    relaunches: int
    timeout_s: float
    monitor_interval_s: float | None  # None: torchrun is not measured


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
            raise RuntimeError(f"{name}: still running after {timeout_s:g}s") from None
    wall = time.monotonic() - begin
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise RuntimeError(f"{name}: exit code {proc.returncode}; last output:\n{tail}")
    return wall


def crash_command(python: str, times: Path, relaunches: int) -> list[str]:
    return [python, str(CRASH_SCRIPT), str(times), str(relaunches)]


def measure_shell(work: Path, setup: Setup) -> tuple[list[float], float]:
    times = work / "shell.times"
    loop = f'for i in $(seq 1 {setup.relaunches + 1}); do "$@"; done'
    argv = ["/bin/sh", "-c", loop, "sh", *crash_command(setup.python, times, setup.relaunches)]
    wall = run_checked(SHELL, argv, work / "shell.log", setup.timeout_s)
    return gaps(times, setup.relaunches), wall


def measure_ours(work: Path, setup: Setup, parts: dict[str, list[float]]) -> tuple[list[float], float]:
    times = work / "ours.times"
    state_dir = work / "state"
    config = work / "bench.toml"
    command = crash_command(setup.python, times, setup.relaunches)
    toml_command = "[" + ", ".join(f'"{part}"' for part in command) + "]"
    config.write_text(CONFIG.format(command=toml_command, cwd=work, state_dir=state_dir))
    argv = [str(SUPERVISOR), "run", "-c", str(config)]
    wall = run_checked(OURS, argv, work / "ours.log", setup.timeout_s)
    for label, values in breakdown(state_dir, times, setup.relaunches).items():
        parts[label] += values
    return gaps(times, setup.relaunches), wall


def breakdown(state_dir: Path, times: Path, relaunches: int) -> dict[str, list[float]]:
    """Split each of our gaps at the ledger's ended_at (attempt i) and started_at (attempt i+1)."""
    starts, exits = read_times(times, relaunches)
    conn = sqlite3.connect(f"{(state_dir / 'ledger.sqlite3').as_uri()}?mode=ro", uri=True)
    try:
        query = "SELECT n, started_at, ended_at FROM attempts"
        rows = {n: (started, ended) for n, started, ended in conn.execute(query)}
    finally:
        conn.close()
    split: dict[str, list[float]] = {label: [] for label in PARTS}
    for i in range(relaunches):  # attempt i+1 crashed at exits[i]; attempt i+2 started at starts[i+1]
        ended, begun = rows[i + 1][1], rows[i + 2][0]
        split[PARTS[0]].append(ended - exits[i])
        split[PARTS[1]].append(begun - ended)
        split[PARTS[2]].append(starts[i + 1] - begun)
    return split


def torchrun_monitor_default() -> float:
    """torchrun's --monitor-interval default, from torch's own argument parser."""
    code = (
        "from torch.distributed.run import get_args_parser as p; print(p().get_default('monitor_interval'))"
    )
    out = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    return float(out.stdout.strip())


def measure_torchrun(work: Path, setup: Setup) -> tuple[list[float], float]:
    assert setup.monitor_interval_s is not None
    times = work / "torchrun.times"
    argv = [
        str(TORCHRUN),
        "--standalone",
        "--nnodes=1",
        "--nproc-per-node=1",
        f"--max-restarts={setup.relaunches}",
        f"--monitor-interval={setup.monitor_interval_s:g}",
    ]
    if setup.python == PYTHON:  # torchrun's usual form: it runs the script with its own interpreter
        argv += [str(CRASH_SCRIPT), str(times), str(setup.relaunches)]
    else:  # the same interpreter as the other launchers
        argv += ["--no-python", *crash_command(setup.python, times, setup.relaunches)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    wall = run_checked(TORCHRUN_NAME, argv, work / "torchrun.log", setup.timeout_s, env)
    return gaps(times, setup.relaunches), wall


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f}"


def report(setup: Setup, rounds: int, results: dict[str, Result], parts: dict[str, list[float]]) -> None:
    print()
    print(
        f"relaunch gap: trainer exit (code 1) -> its next start; {setup.relaunches} relaunches "
        f"x {rounds} round(s) per launcher"
    )
    print(f"  trainer: {setup.python} {CRASH_SCRIPT.name}")
    print(f"  {'launcher':<22}{'median':>8}{'p90':>9}{'max':>9}  ms   wall/round")
    for r in results.values():
        print(
            f"  {r.name:<22}{ms(statistics.median(r.gaps_s))} {ms(percentile(r.gaps_s, 90))} "
            f"{ms(max(r.gaps_s))}      {statistics.mean(r.walls_s):5.1f}s  {r.note}"
        )
    med = {name: statistics.median(r.gaps_s) for name, r in results.items()}
    p90 = {name: percentile(r.gaps_s, 90) for name, r in results.items()}
    print("  ratios (median / p90):")
    if TORCHRUN_NAME in results:
        print(
            f"    ours / torchrun    {med[OURS] / med[TORCHRUN_NAME]:6.3f} / "
            f"{p90[OURS] / p90[TORCHRUN_NAME]:6.3f}   (target <= {TARGET_VS_TORCHRUN:g})"
        )
        claim("relaunch gap, ours / torchrun (median)", med[OURS] / med[TORCHRUN_NAME], TARGET_VS_TORCHRUN)
    else:
        print("    ours / torchrun    n/a (torchrun was not measured)")
    print(
        f"    ours / shell loop  {med[OURS] / med[SHELL]:6.3f} / {p90[OURS] / p90[SHELL]:6.3f}"
        "   (1.0: no overhead over a bare loop)"
    )
    over_ours = med[OURS] - med[SHELL]
    line = f"    above the floor    ours {over_ours * 1000:+.1f} ms"
    if TORCHRUN_NAME in results:
        over_torchrun = med[TORCHRUN_NAME] - med[SHELL]
        line += f", torchrun {over_torchrun * 1000:+.1f} ms (ratio {over_ours / over_torchrun:+.3f})"
    print(line + "   (median minus the shell loop's median)")
    print("  where our gap goes (median / p90 ms, from the ledger's timestamps):")
    for label, values in parts.items():
        print(f"    {label:<24}{ms(statistics.median(values))} {ms(percentile(values, 90))}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--relaunches", type=int, default=20, help="crashes (= relaunches) per launcher run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per launcher, taking turns")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds allowed per launcher run")
    parser.add_argument(
        "--trainer-python",
        default=PYTHON,
        help="interpreter for the crash script (default: this one); its start-up is part of every gap",
    )
    parser.add_argument("--skip-torchrun", action="store_true", help="measure only ours and the shell loop")
    args = parser.parse_args()
    if args.relaunches < 1 or args.rounds < 1:
        parser.error("--relaunches and --rounds must be >= 1")
    if not SUPERVISOR.exists():
        parser.error(f"{SUPERVISOR} not found: run this with the project's venv python")
    do_torchrun = not args.skip_torchrun
    if do_torchrun and not TORCHRUN.exists():
        print(f"note: {TORCHRUN} not found (torch not installed?): torchrun is not measured", file=sys.stderr)
        do_torchrun = False

    interval = torchrun_monitor_default() if do_torchrun else None
    setup = Setup(args.trainer_python, args.relaunches, args.timeout, interval)
    parts: dict[str, list[float]] = {label: [] for label in PARTS}
    launchers: dict[str, Callable[[Path, Setup], tuple[list[float], float]]] = {
        SHELL: measure_shell,
        OURS: lambda work, s: measure_ours(work, s, parts),
    }
    results = {SHELL: Result(SHELL), OURS: Result(OURS)}
    if do_torchrun:
        launchers[TORCHRUN_NAME] = measure_torchrun
        results[TORCHRUN_NAME] = Result(TORCHRUN_NAME, note=f"--monitor-interval={interval:g} (its default)")

    top = Path(tempfile.mkdtemp(prefix="relaunch-gap-"))
    try:
        # Warm the page cache for the interpreter and the script before anything is timed.
        subprocess.run(crash_command(setup.python, top / "warmup.times", 0), check=True, timeout=30)
        names = list(launchers)
        for n in range(args.rounds):
            for name in names[n % len(names) :] + names[: n % len(names)]:
                work = top / f"round{n}-{name.split()[0]}"
                work.mkdir()
                round_gaps, wall = launchers[name](work, setup)
                results[name].gaps_s += round_gaps
                results[name].walls_s.append(wall)
        report(setup, args.rounds, results, parts)
    finally:
        shutil.rmtree(top, ignore_errors=True)
    return exit_status()


if __name__ == "__main__":
    sys.exit(main())
