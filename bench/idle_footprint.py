#!/usr/bin/env python3
"""Idle footprint: what the supervisor costs while its trainer simply runs.

Starts `train-supervisor run` on a trainer that only sleeps
(`python -c "import time; time.sleep(600)"`), waits until the trainer process exists
and `train-supervisor status --json` says "running", lets it settle, then watches the
supervisor process itself (not the trainer) over an idle window (--seconds):

  RSS          psutil's memory_info().rss, sampled every 0.5 s (max and last), plus
               USS/PSS once at the end (psutil's memory_full_info(), from smaps);
  CPU          user+system time delta (psutil cpu_times()) and, in ns, the on-CPU time
               delta summed over all its threads (/proc/<pid>/task/*/schedstat);
  wakeups      voluntary and involuntary context switches, summed over all its threads
               (/proc/<pid>/task/*/status), per second. A supervisor that blocks until
               something happens shows ~0; one that polls shows its polling rate.

Reading /proc does not wake the watched process. Then sends SIGTERM and checks that
the supervisor exits 0 within the stop grace period, that the sleeping trainer is gone,
and that the ledger says "stopped".
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
from _claims import claim, exit_status

PYTHON = sys.executable
SUPERVISOR = Path(sys.executable).parent / "train-supervisor"
TARGET_RSS_MB = 80.0
SLEEP_CODE = "import time; time.sleep(600)"
SAMPLE_INTERVAL_S = 0.5
STARTUP_TIMEOUT_S = 30.0
SETTLE_S = 1.0  # after "running": let the launch's own bookkeeping finish before measuring

CONFIG = """\
[run]
name = "bench-idle-footprint"
command = ["{python}", "-c", "{code}"]
cwd = "{cwd}"
state_dir = "{state_dir}"

[stop]
grace_s = {grace_s}
"""


@dataclass(frozen=True)
class Counters:
    cpu_s: float  # user + system, from psutil (clock-tick resolution)
    on_cpu_ns: int  # schedstat, summed over threads
    voluntary: int
    involuntary: int
    threads: int


def read_counters(proc: psutil.Process) -> Counters:
    times = proc.cpu_times()
    on_cpu = voluntary = involuntary = threads = 0
    for task in Path(f"/proc/{proc.pid}/task").iterdir():
        try:
            on_cpu += int((task / "schedstat").read_text().split()[0])
            for line in (task / "status").read_text().splitlines():
                key, _, value = line.partition(":")
                if key == "voluntary_ctxt_switches":
                    voluntary += int(value)
                elif key == "nonvoluntary_ctxt_switches":
                    involuntary += int(value)
        except (OSError, ValueError, IndexError):
            continue  # the thread ended between listing and reading
        threads += 1
    return Counters(times.user + times.system, on_cpu, voluntary, involuntary, threads)


def status(config: Path) -> dict[str, object]:
    out = subprocess.run(
        [str(SUPERVISOR), "status", "-c", str(config), "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    data: dict[str, object] = json.loads(out.stdout)
    return data


def wait_for_trainer(supervisor: psutil.Process, config: Path) -> psutil.Process:
    """The sleeping trainer, once it runs and the ledger says so."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    trainer = None
    while time.monotonic() < deadline:
        if not supervisor.is_running() or supervisor.status() == psutil.STATUS_ZOMBIE:
            raise RuntimeError("the supervisor exited before the trainer ran")
        if trainer is None:
            for child in supervisor.children():
                try:
                    if SLEEP_CODE in child.cmdline():
                        trainer = child
                except psutil.NoSuchProcess:
                    continue
        if trainer is not None and status(config).get("state") == "running":
            return trainer
        time.sleep(0.1)
    raise RuntimeError(f"the trainer was not running after {STARTUP_TIMEOUT_S:g}s")


def watch(supervisor: psutil.Process, seconds: float) -> tuple[Counters, Counters, float, list[float]]:
    """Counters at both ends of the window, its exact length, and the RSS samples."""
    rss: list[float] = []
    before = read_counters(supervisor)
    begin = time.monotonic()
    end = begin + seconds
    while True:
        rss.append(supervisor.memory_info().rss)
        left = end - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(SAMPLE_INTERVAL_S, left))
    after = read_counters(supervisor)
    return before, after, time.monotonic() - begin, rss


def stop(
    popen: subprocess.Popen[bytes], trainer: psutil.Process, grace_s: float
) -> tuple[int | None, float, bool]:
    """SIGTERM the supervisor: its exit code (None if it outlived grace + 5 s), how long it
    took, and whether the trainer is gone."""
    begin = time.monotonic()
    popen.send_signal(signal.SIGTERM)
    try:
        code: int | None = popen.wait(timeout=grace_s + 5)
    except subprocess.TimeoutExpired:
        code = None
    took = time.monotonic() - begin
    try:
        gone = not trainer.is_running() or trainer.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        gone = True
    return code, took, gone


def mb(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:.1f} MB"


def report(
    supervisor: psutil.Process,
    window: tuple[Counters, Counters, float, list[float]],
    full: tuple[int, int, int] | None,
) -> None:
    before, after, seconds, rss = window
    cpu_s = after.cpu_s - before.cpu_s
    on_cpu_s = (after.on_cpu_ns - before.on_cpu_ns) / 1e9
    voluntary = after.voluntary - before.voluntary
    involuntary = after.involuntary - before.involuntary
    print()
    print(f"idle footprint of train-supervisor (pid {supervisor.pid}) over {seconds:.1f} s, trainer sleeping")
    print(
        f"  RSS          max {mb(max(rss))}, last {mb(rss[-1])} ({len(rss)} samples)   "
        f"(target <= {TARGET_RSS_MB:g} MB)"
    )
    claim("idle supervisor RSS, MB", max(rss) / 2**20, TARGET_RSS_MB)
    if full is not None:
        print(f"               USS {mb(full[0])}, PSS {mb(full[1])}, swap {mb(full[2])}")
    print(
        f"  CPU          {cpu_s:.3f} s user+sys ({100 * cpu_s / seconds:.3f} % of one core); "
        f"on-CPU per schedstat {on_cpu_s * 1000:.2f} ms ({100 * on_cpu_s / seconds:.4f} %)"
    )
    print(
        f"  wakeups      {voluntary} voluntary + {involuntary} involuntary context switches over "
        f"{after.threads} thread(s) = {(voluntary + involuntary) / seconds:.2f}/s   "
        "(target: ~0/s, no busy polling)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the idle window")
    parser.add_argument("--grace", type=float, default=5.0, help="the run's stop grace_s")
    args = parser.parse_args()
    if args.seconds <= 0:
        parser.error("--seconds must be > 0")
    if not SUPERVISOR.exists():
        parser.error(f"{SUPERVISOR} not found: run this with the project's venv python")

    work = Path(tempfile.mkdtemp(prefix="idle-footprint-"))
    config = work / "bench.toml"
    config.write_text(
        CONFIG.format(python=PYTHON, code=SLEEP_CODE, cwd=work, state_dir=work / "state", grace_s=args.grace)
    )
    log = (work / "supervisor.log").open("wb")
    popen = subprocess.Popen(
        [str(SUPERVISOR), "run", "-c", str(config)], stdout=log, stderr=subprocess.STDOUT
    )
    trainer: psutil.Process | None = None
    try:
        supervisor = psutil.Process(popen.pid)
        trainer = wait_for_trainer(supervisor, config)
        time.sleep(SETTLE_S)
        window = watch(supervisor, args.seconds)
        try:
            info = supervisor.memory_full_info()
            full: tuple[int, int, int] | None = (info.uss, info.pss, info.swap)
        except psutil.AccessDenied:
            full = None
        report(supervisor, window, full)
        code, took, gone = stop(popen, trainer, args.grace)
        final = status(config)
        print(
            f"  stop         SIGTERM -> exit code {code} after {took:.2f} s (grace {args.grace:g} s); "
            f"trainer pid {trainer.pid} gone: {'yes' if gone else 'NO'}; "
            f"ledger: state {final.get('state')}, exit_code {final.get('exit_code')}"
        )
        ok = code == 0 and took <= args.grace and gone
        return max(0 if ok else 1, exit_status())
    finally:
        if popen.poll() is None:
            popen.kill()
            popen.wait()
        if trainer is not None and trainer.is_running():
            trainer.kill()
        log.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
