"""A finished run's final state is settled before the supervisor exits; a supervisor that
dies while settling it settles it at its next start, and never relaunches the trainer."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.procs import wait_for
from tests.support.run_dirs import generic_config, good, writer_command
from tests.support.twins import CLI, run_cli, status


@pytest.mark.timeout(400)
def test_a_supervisor_killed_while_settling_settles_at_its_next_start(tmp_path: Path) -> None:
    checkpoints = tmp_path / "run" / "checkpoints"
    good(checkpoints / "ckpt_10.pt", 10)
    launches = tmp_path / "launches.txt"
    ready = tmp_path / "ready"
    # The trainer says it launched, waits for the outside writer below, and finishes.
    code = (
        "import pathlib, time\n"
        f"open({str(launches)!r}, 'a').write('launched\\n')\n"
        f"while not pathlib.Path({str(ready)!r}).exists():\n    time.sleep(0.05)\n"
    )
    trainer = [sys.executable, "-c", code]
    config = generic_config(tmp_path, tmp_path / "state", command=trainer, quiet_s=0.2, verify_wait_s=120)
    supervisor = subprocess.Popen([*CLI, "run", "-c", str(config)], stdout=subprocess.DEVNULL)
    writer = None
    try:
        wait_for(launches.exists, 120, "the launch")
        # Something outside keeps writing a checkpoint-named file: the settling waits for it.
        writer = subprocess.Popen(writer_command(checkpoints / "ckpt_20.pt", ready))
        wait_for(lambda: status(config).get("state") == "finishing", 120, "the final settling")
        supervisor.send_signal(signal.SIGKILL)
        supervisor.wait(60)
    finally:
        if writer is not None:
            writer.kill()
            writer.wait()
        if supervisor.poll() is None:
            supervisor.kill()
    again = run_cli("run", "-c", str(config))
    assert again.returncode == 0, again.stdout[-3000:]
    assert launches.read_text().splitlines() == ["launched"], "the finished trainer is never relaunched"
    data = status(config)
    assert data["state"] == "completed"
    kinds = [e["kind"] for e in data["events"]]
    assert "finishing" in kinds
    assert kinds.index("finishing") < kinds.index("final_state")


REWRITER = """
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import torch
from twinlib import save
path = Path(sys.argv[2])
path.parent.mkdir(parents=True, exist_ok=True)
state = {"model": torch.nn.Linear(4, 4).state_dict(), "optimizer": {}, "step": 1}
for _ in range(int(sys.argv[3])):  # each rewrite stalls mid-write; the next begins at once
    save(state, path, pause_s=float(sys.argv[4]))
"""


def test_a_file_never_quiet_between_rewrites_is_warned_about(tmp_path: Path) -> None:
    from tests.support.twins import TRAINERS

    ckpt = tmp_path / "run" / "checkpoints" / "ckpt_1.pt"
    # Stalls of 10x quiet_s inside each rewrite, none between two: every version the
    # watcher hands over is caught mid-write, and none is ever verified.
    trainer = [sys.executable, "-c", REWRITER, str(TRAINERS), str(ckpt), "4", "1.0"]
    config = generic_config(tmp_path, tmp_path / "state", command=trainer, quiet_s=0.1)
    result = run_cli("run", "-c", str(config), timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
    warnings = [e["message"] for e in status(config)["events"] if e["kind"] == "unsettled"]
    assert len(warnings) == 1, warnings
    assert "raise [checkpoints] quiet_s" in warnings[0]
    assert [e for e in status(config)["events"] if e["kind"] == "rejected"] == []
