"""Generic run directories for checkpoint tests: the config, good checkpoints, a slow writer."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from tests.support.twins import write_config

NOW = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)


def good(path: Path, step: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    net = torch.nn.Linear(4, 4)
    torch.save({"model": net.state_dict(), "optimizer": {}, "step": step}, path)
    return path


def generic_config(
    tmp_path: Path,
    state: Path,
    *,
    command: list[str] | None = None,
    restart: dict[str, Any] | None = None,
    **checkpoints: Any,
) -> Path:
    config = write_config(
        tmp_path,
        adapter="generic",
        restart=restart,
        command=command or [sys.executable, "-c", "pass"],
        cwd=tmp_path,
        checkpoint_dir=tmp_path / "run" / "checkpoints",
        options={
            "pattern": "ckpt_{step}.pt",
            "required_keys": ["model", "optimizer", "step"],
            "step_key": "step",
        },
        checkpoints={"quiet_s": 0.05, **checkpoints},
        more={"heartbeat": {"mode": "off"}},
    )
    text = config.read_text().replace(json.dumps(str(tmp_path / "state")), json.dumps(str(state)))
    config.write_text(text)
    return config


def writer_command(path: Path, ready: Path) -> list[str]:
    """A process that keeps `path` open for writing and appends to it now and then."""
    code = (
        "import sys, time, pathlib\n"
        "fh = open(sys.argv[1], 'ab')\n"
        "pathlib.Path(sys.argv[2]).write_text('ready')\n"
        "while True:\n    fh.write(b'x'); fh.flush(); time.sleep(0.05)\n"
    )
    return [sys.executable, "-c", code, str(path), str(ready)]
