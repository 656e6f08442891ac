"""Test side of the layout twins: write a config around a twin, run the real CLI,
read what the twin said."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.load import scaled

CLI = [sys.executable, "-m", "supervisor.cli"]
TRAINERS = Path(__file__).parent / "trainers"

FAST_RESTART = {"backoff_initial_s": 0.1, "backoff_max_s": 0.2, "stable_after_s": 600}
FAST_CHECKPOINTS = {"quiet_s": 0.2, "verify_wait_s": 60}


def twin_command(script: str, *args: str) -> list[str]:
    return [sys.executable, str(TRAINERS / script), *args]


def write_faults(run_dir: Path, faults: list[dict[str, Any]]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "faults.json").write_text(json.dumps(faults))


def write_config(
    tmp_path: Path,
    *,
    adapter: str,
    command: list[str],
    cwd: Path,
    checkpoint_dir: str | Path,
    options: dict[str, Any] | None = None,
    restart: dict[str, Any] | None = None,
    checkpoints: dict[str, Any] | None = None,
    more: dict[str, dict[str, Any]] | None = None,
    env: dict[str, str] | None = None,
) -> Path:
    """A config running `command` in `cwd` under `adapter`; state in tmp_path/state.
    `more`: further tables, e.g. {"heartbeat": {"timeout_s": 2}}; `env`: run.env."""
    run = {"command": command, "cwd": str(cwd), "state_dir": str(tmp_path / "state")}
    tables: dict[str, dict[str, Any]] = {
        "run": {**run, "env": env} if env else run,
        "adapter": {"name": adapter, "checkpoint_dir": str(checkpoint_dir), **(options or {})},
        "restart": {**FAST_RESTART, **(restart or {})},
        "checkpoints": {**FAST_CHECKPOINTS, **(checkpoints or {})},
        **(more or {}),
    }
    lines = []
    for table, values in tables.items():
        lines.append(f"[{table}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in values.items()]
    path = tmp_path / "supervisor.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def toml_value(value: Any) -> str:
    """JSON is TOML for strings, numbers, booleans and lists; tables need their own form."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)


def run_cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """The CLI's result; `timeout` is an idle machine's seconds, stretched on a busy one."""
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=scaled(timeout), check=False)


def status(config: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(run_cli("status", "-c", str(config), "--json").stdout)
    return data


def trainer_output(tmp_path: Path) -> list[str]:
    """Every line the trainer printed, over all attempts (stdout and stderr)."""
    log = tmp_path / "state" / "logs" / "trainer.log"
    return log.read_text().replace("\r", "\n").splitlines()
