"""`train-supervisor demo`: supervise a bundled CPU trainer that crashes on purpose.

A package of its own, beside `supervisor`: its trainer imports torch, and the daemon's
package never does.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from supervisor import config as config_module
from supervisor.status import render, report

MARKER = ".train-supervisor-demo"
FAULTS = [
    {"at_step": 23, "kind": "exception"},
    {"at_step": 41, "kind": "sigkill"},
    {"at_step": 50, "kind": "torn"},
]


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
    shutil.rmtree(directory, ignore_errors=True)
    (directory / "run").mkdir(parents=True)
    (directory / MARKER).touch()
    (directory / "run" / "faults.json").write_text(json.dumps(FAULTS, indent=1))
    template = (Path(__file__).parent / "demo.toml").read_text()
    config_path = directory / "demo.toml"
    config_path.write_text(template.replace("{python}", sys.executable))

    print(
        "train-supervisor demo: a tiny CPU trainer runs 60 steps, saving a checkpoint every 10.\n"
        "It crashes with an exception at step 23, is SIGKILLed at step 41, and its save at\n"
        "step 50 is torn half-way by a power cut. Left alone, that torn file would make it start\n"
        "again from step 0. The supervisor verifies every checkpoint as it lands, moves the torn\n"
        "one aside, and relaunches each time so the trainer resumes from its newest good state.\n",
        flush=True,
    )
    started = time.monotonic()
    command = [sys.executable, "-m", "supervisor.cli", "run", "-c", str(config_path)]
    code = subprocess.run(command, check=False).returncode
    elapsed = time.monotonic() - started

    config = config_module.load(config_path)
    print()
    render(report(config))
    resumes = [
        line.strip()
        for line in config.trainer_log.read_text(errors="replace").splitlines()
        if re.match(r"(resumed from|no checkpoint found|failed to load|training finished)", line)
    ]
    print("\nwhat the trainer said at each start and at the end:")
    for line in resumes:
        print(f"  {line}")
    verdict = "finished training" if code == 0 else f"exited with code {code}"
    print(f"\nThe supervisor {verdict} after {elapsed:.1f}s. Config: {config_path}")
    return code
