"""Command-line start-up, measured in one run on the same machine: `--help`, `config check`
and `status` against a bare `python -c pass` (medians of --runs runs each, interleaved), and
`verify` of one small checkpoint against a bare `python -c "import torch"` (medians of
--torch-runs, interleaved), since the validator worker's torch import is verify's floor.
Beside them, for reading `config check`'s figure: the floor of any command that validates
with pydantic (click, pydantic and one trivial model).

`status` reads the ledger of a run that completed (the bench runs it once first: a trainer
that exits 0 at once). `verify` judges a 1 KB torch checkpoint with `--adapter generic`.

Claims: --help <= 7x, config check and status <= 15x a bare interpreter start, verify
<= 1.3x a bare torch import.
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
STATUS_TARGET = 15.0
VERIFY_TARGET = 1.3
CONFIG = """\
[run]
name = "bench"
command = ["{python}", "-c", "pass"]
cwd = "{cwd}"
state_dir = "{cwd}/state"
"""
# What any command that validates with pydantic pays before a model of ours: click, pydantic,
# and its first model (its schema machinery and plugin loader load then). Printed beside
# `config check` as its floor, not a claim.
PYDANTIC_FLOOR = "import click, pydantic\nclass Model(pydantic.BaseModel):\n    x: int\nModel(x=1)\n"
WRITE_CHECKPOINT = (
    "import sys, torch; torch.save({'model': {'w': torch.zeros(16)}, 'step': 100}, sys.argv[1])"
)


def interleaved_medians(commands: dict[str, list[str]], runs: int) -> dict[str, float]:
    """The median wall time of each command, the commands taking turns in every round (so
    that a change in the machine's load falls on all of them alike)."""
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, command in commands.items():
            start = time.perf_counter()
            subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def prepare(work: Path, python: str) -> tuple[Path, Path]:
    """The config of a run that completed once (so `status` has a ledger to read), and a
    small checkpoint for `verify`."""
    config = work / "bench.toml"
    config.write_text(CONFIG.format(python=python, cwd=work))
    subprocess.run(
        [python, "-m", "supervisor.cli", "run", "-c", str(config)], capture_output=True, check=True
    )
    checkpoint = work / "ckpt_100.pt"
    subprocess.run([python, "-c", WRITE_CHECKPOINT, str(checkpoint)], check=True)
    return config, checkpoint


def report(title: str, base_name: str, medians: dict[str, float]) -> None:
    print(title)
    for name, seconds in medians.items():
        print(f"  {name:24}{seconds * 1000:8.1f} ms {seconds / medians[base_name]:6.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--torch-runs", type=int, default=7)
    args = parser.parse_args()
    python = sys.executable
    cli = [python, "-m", "supervisor.cli"]
    with tempfile.TemporaryDirectory(prefix="cli-startup-") as work:
        config, checkpoint = prepare(Path(work), python)
        verify = [*cli, "verify", "--adapter", "generic", str(checkpoint)]
        interleaved_medians({"warm": [*cli, "--help"], "torch": [python, "-c", "import torch"]}, 2)
        fast = interleaved_medians(
            {
                "python -c pass": [python, "-c", "pass"],
                "--help": [*cli, "--help"],
                "click + pydantic floor": [python, "-c", PYDANTIC_FLOOR],
                "config check": [*cli, "config", "check", "-c", str(config)],
                "status": [*cli, "status", "-c", str(config)],
                "status --json": [*cli, "status", "--json", "-c", str(config)],
            },
            args.runs,
        )
        slow = interleaved_medians(
            {"python -c 'import torch'": [python, "-c", "import torch"], "verify (1 small file)": verify},
            args.torch_runs,
        )
    report(f"command-line start-up, medians of {args.runs} interleaved runs", "python -c pass", fast)
    report(f"verify, medians of {args.torch_runs} interleaved runs", "python -c 'import torch'", slow)
    bare, torch_s = fast["python -c pass"], slow["python -c 'import torch'"]
    claim("--help / python -c pass", fast["--help"] / bare, HELP_TARGET)
    claim("config check / python -c pass", fast["config check"] / bare, CHECK_TARGET)
    claim("status / python -c pass", fast["status"] / bare, STATUS_TARGET)
    claim("verify / python -c 'import torch'", slow["verify (1 small file)"] / torch_s, VERIFY_TARGET)
    return exit_status()


if __name__ == "__main__":
    sys.exit(main())
