"""`train-supervisor demo`, the main job on a built-in default, run for real."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CLI = [sys.executable, "-m", "supervisor.cli"]


def test_the_demo_recovers_from_crashes_and_a_torn_checkpoint_and_finishes(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    result = subprocess.run(
        [*CLI, "demo", "--dir", str(demo)], capture_output=True, text=True, timeout=180, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    said = result.stdout[result.stdout.index("what the trainer said") :]
    assert said.splitlines()[1:6] == [
        "  no checkpoint found: starting from step 0",
        "  resumed from ckpt_20.pt at step 20",
        "  resumed from ckpt_40.pt at step 40",
        "  resumed from ckpt_40.pt at step 40",  # after the torn ckpt_50.pt was moved aside
        "  training finished at step 60",
    ]
    assert "failed to load" not in result.stdout, "never a silent fresh start"
    assert list((demo / "state" / "quarantine").glob("*/ckpt_50.pt"))
    status = subprocess.run(
        [*CLI, "status", "-c", str(demo / "demo.toml"), "--json"], capture_output=True, text=True, check=True
    )
    data = json.loads(status.stdout)
    assert data["state"] == "completed"
    assert data["last_verified_step"] == 60
    assert [(a["cause"], a["exit"]) for a in data["attempts"]] == [
        ("crash", "exit code 1"),
        ("crash", "killed by SIGKILL"),
        ("crash", "killed by SIGKILL"),
        ("completed", "exit code 0"),
    ]


def test_the_demo_never_empties_a_directory_it_did_not_make(tmp_path: Path) -> None:
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    result = subprocess.run(
        [*CLI, "demo", "--dir", str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert "refusing to empty" in result.stderr
    assert precious.read_text() == "keep me"
