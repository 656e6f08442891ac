"""`train-supervisor demo`: supervise a bundled CPU trainer that fails on purpose.

A package of its own, beside `supervisor`: its trainer imports torch, and the daemon's
package never does.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from supervisor import config as config_module
from supervisor_demo.account import account
from supervisor_demo.budgets import Budgets, scaled, timed_torch_import_s

MARKER = ".train-supervisor-demo"
FAULTS = [
    {"at_step": 23, "kind": "exception"},
    {"at_step": 28, "kind": "nan"},
    {"at_step": 36, "kind": "hang"},
    {"at_step": 41, "kind": "sigkill"},
    {"at_step": 50, "kind": "torn"},
]
WHAT_FAULTS_DO = {
    "exception": "crashes with an exception",
    "nan": "starts to report a NaN loss (skipping those updates, its weights stay finite)",
    "hang": "hangs",
    "sigkill": "is SIGKILLed, as by the OOM killer",
    "torn": "loses power half-way through its save",
}


def run_demo(directory: Path) -> int:
    if importlib.util.find_spec("torch") is None:
        print(
            "train-supervisor demo: the demo trainer needs torch (pip install torch==2.13.0)", file=sys.stderr
        )
        return 2
    directory = directory.absolute()
    if directory.exists() and any(directory.iterdir()) and not (directory / MARKER).exists():
        print(
            f"train-supervisor demo: refusing to empty {directory}: it is not a demo directory",
            file=sys.stderr,
        )
        return 2
    print(introduction(), flush=True)
    budgets = scaled(timed_torch_import_s())
    print(budget_line(budgets), flush=True)
    config_path = set_up(directory, budgets)
    started = time.monotonic()
    command = [sys.executable, "-m", "supervisor.cli", "run", "-c", str(config_path)]
    code = subprocess.run(command, check=False).returncode
    elapsed = time.monotonic() - started

    config = config_module.load(config_path)
    print()
    print("\n".join(account(config.state_dir, config.trainer_log)))
    verdict = "finished training" if code == 0 else f"exited with code {code}"
    print(f"\nThe supervisor {verdict} after {elapsed:.1f}s.")
    print(f"Every attempt and event: train-supervisor status -c {config_path}")
    return code


def set_up(directory: Path, budgets: Budgets) -> Path:
    """A fresh demo directory with the trainer's faults and the run's config."""
    shutil.rmtree(directory, ignore_errors=True)
    (directory / "run").mkdir(parents=True)
    (directory / MARKER).touch()
    (directory / "run" / "faults.json").write_text(json.dumps(FAULTS, indent=1))
    template = (Path(__file__).parent / "demo.toml").read_text()
    config_path = directory / "demo.toml"
    config_path.write_text(
        template.replace("{python}", sys.executable)
        .replace("{hang_timeout_s}", str(budgets.hang_timeout_s))
        .replace("{startup_timeout_s}", str(budgets.startup_timeout_s))
    )
    return config_path


def introduction() -> str:
    faults = "\n".join(f"  at step {f['at_step']} it {WHAT_FAULTS_DO[str(f['kind'])]};" for f in FAULTS)
    return (
        "train-supervisor demo: a tiny CPU trainer runs 60 steps, saving a checkpoint every 10.\n"
        f"On purpose, once each:\n{faults}\n"
        "Restarted blindly, it would start again from step 0 after the torn save, and resume\n"
        "from a checkpoint saved after its loss had gone bad. The supervisor verifies every\n"
        "checkpoint as it lands, notices each failure, moves bad checkpoints aside, and\n"
        "relaunches from the newest good state."
    )


def budget_line(budgets: Budgets) -> str:
    return (
        f"A torch import takes {budgets.torch_import_s:.1f}s on this machine now, so the supervisor calls\n"
        f"the trainer hung after {budgets.hang_timeout_s:g}s without a heartbeat "
        f"({budgets.startup_timeout_s:g}s before the first).\n"
    )
