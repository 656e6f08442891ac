"""`train-supervisor demo`, the main job on a built-in default, run for real."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CLI = [sys.executable, "-m", "supervisor.cli"]


def test_the_demo_recovers_from_both_crashes_and_finishes(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    result = subprocess.run(
        [*CLI, "demo", "--dir", str(demo)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "resumed from ckpt_20.pt at step 20" in result.stdout
    assert "resumed from ckpt_40.pt at step 40" in result.stdout
    assert "training finished at step 60" in result.stdout
    status = subprocess.run(
        [*CLI, "status", "-c", str(demo / "demo.toml"), "--json"], capture_output=True, text=True, check=True
    )
    data = json.loads(status.stdout)
    assert data["state"] == "completed"
    assert [(a["cause"], a["exit"]) for a in data["attempts"]] == [
        ("crash", "exit code 1"),
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
