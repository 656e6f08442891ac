"""Command-line start-up: `train-supervisor --help` and `config check` against a bare
`python -c pass`, medians of --runs runs each, measured in one run on the same machine.

Claims: --help <= 7x and config check <= 15x a bare interpreter start.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _claims import claim, exit_status

HELP_TARGET = 7.0
CHECK_TARGET = 15.0
CONFIG = """\
[run]
name = "bench"
command = ["{python}", "-c", "pass"]
cwd = "{cwd}"
state_dir = "{cwd}/state"
"""


def median_s(command: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="cli-startup-") as work:
        config = Path(work) / "bench.toml"
        config.write_text(CONFIG.format(python=python, cwd=work))
        cli = [python, "-m", "supervisor.cli"]
        median_s([*cli, "--help"], 2)  # warm the page cache
        bare = median_s([python, "-c", "pass"], args.runs)
        help_s = median_s([*cli, "--help"], args.runs)
        check_s = median_s([*cli, "config", "check", "-c", str(config)], args.runs)
    print(f"command-line start-up, median of {args.runs} runs")
    for name, seconds in (("python -c pass", bare), ("--help", help_s), ("config check", check_s)):
        print(f"  {name:16}{seconds * 1000:8.1f} ms {seconds / bare:6.1f}x")
    claim("--help / python -c pass", help_s / bare, HELP_TARGET)
    claim("config check / python -c pass", check_s / bare, CHECK_TARGET)
    return exit_status()


if __name__ == "__main__":
    sys.exit(main())
