"""Several processes, one trainer: `torchrun --nproc-per-node=2` on CPU (gloo) under the
supervisor, where one worker crashes or hangs. The whole process group is stopped and
relaunched; nothing of it is left behind."""

from __future__ import annotations

import shutil
import sqlite3
import sys
from pathlib import Path

import pytest

from supervisor.process.sessions import marked_processes
from tests.support.ledger_reads import causes, completed, events
from tests.support.load import scaled
from tests.support.twins import TRAINERS, write_config

TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent))

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(TORCHRUN is None, reason="torchrun is not installed beside this Python"),
]


def supervise_torchrun(tmp_path: Path, mode: str) -> Path:
    assert TORCHRUN is not None
    command = [TORCHRUN, "--standalone", "--nproc-per-node=2", str(TRAINERS / "ddp_twin.py"), mode, "40"]
    return write_config(
        tmp_path,
        adapter="generic",
        command=command,
        cwd=tmp_path,
        checkpoint_dir="ckpt",
        # Far above a working group's gaps, and a crashed group's teardown, when busy too.
        more={"heartbeat": {"timeout_s": scaled(3.0)}, "stop": {"grace_s": 5.0}},
    )


def left_running(tmp_path: Path) -> list[int]:
    """Processes of any attempt (torchrun, its agent, its workers) still alive."""
    with sqlite3.connect(tmp_path / "state" / "ledger.sqlite3") as conn:
        markers = [m for (m,) in conn.execute("SELECT marker FROM attempts")]
    assert markers
    return [pid for marker in markers for pid in marked_processes(marker)]


def test_a_crashing_worker_ends_the_group_and_the_supervisor_relaunches_it(tmp_path: Path) -> None:
    config = supervise_torchrun(tmp_path, "crash")
    completed(config)
    assert causes(config) == ["crash", "completed"]
    assert left_running(tmp_path) == []


def test_a_hung_worker_is_caught_by_the_heartbeat_budget_and_the_group_relaunched(tmp_path: Path) -> None:
    config = supervise_torchrun(tmp_path, "hang")
    completed(config)
    assert causes(config) == ["hang", "completed"]
    ((_, _, _, message),) = events(tmp_path, "hang")
    assert "last: heartbeat at" in message
    assert left_running(tmp_path) == []
