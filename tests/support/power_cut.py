"""Cutting the power under a supervisor: SIGKILL of its whole tree, and the powercut twin's config."""

from __future__ import annotations

import contextlib
import signal
import subprocess
from pathlib import Path
from typing import Any

import psutil

from tests.support.load import scaled
from tests.support.twins import twin_command, write_config

SAVE_EVERY = 10


def _signal(proc: psutil.Process, sig: signal.Signals) -> None:
    with contextlib.suppress(psutil.NoSuchProcess):
        proc.send_signal(sig)


def powercut_config(
    tmp_path: Path, steps: int, *, restart: dict[str, Any] | None = None, **checkpoints: Any
) -> Path:
    """A run of the power-cut twin under the generic adapter, saving every SAVE_EVERY steps."""
    run_dir = tmp_path / "run"
    return write_config(
        tmp_path,
        adapter="generic",
        command=twin_command("powercut_twin.py", str(run_dir), str(steps), str(SAVE_EVERY)),
        cwd=tmp_path,
        checkpoint_dir=run_dir / "checkpoints",
        options={
            "pattern": "ckpt_{step}.pt",
            "required_keys": ["model", "optimizer", "step"],
            "step_key": "step",
        },
        restart=restart,
        checkpoints={"quiet_s": 0.05, "keep_verified": 2, **checkpoints},
        more={"heartbeat": {"mode": "off"}},
    )


def power_cut(supervisor: subprocess.Popen[bytes]) -> None:
    """Freeze the supervisor and every process under it, then kill them all: nothing
    acts between the first and the last kill."""
    try:
        tree = [psutil.Process(supervisor.pid), *psutil.Process(supervisor.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    for proc in tree:
        _signal(proc, signal.SIGSTOP)
    for proc in tree:
        _signal(proc, signal.SIGKILL)
    supervisor.wait(timeout=scaled(30))
