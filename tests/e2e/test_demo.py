"""`train-supervisor demo`, the main job on a built-in default, run for real."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.load import scaled

CLI = [sys.executable, "-m", "supervisor.cli"]
# About half a minute on an idle machine; the demo scales its own hang budgets on a busy one.
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One real demo run, shared by the tests that read what it left: its directory and
    what it printed."""
    directory = tmp_path_factory.mktemp("demo") / "demo"
    started = time.monotonic()
    demo = subprocess.Popen(
        [*CLI, "demo", "--dir", str(directory)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = demo.communicate(timeout=scaled(240))
    except subprocess.TimeoutExpired:
        os.killpg(demo.pid, signal.SIGTERM)  # the supervisor in it stops its trainer
        out, err = demo.communicate()
    # Reported, never asserted: timings on a shared machine are noise.
    print(f"the demo took {time.monotonic() - started:.1f}s")
    assert demo.returncode == 0, out + err
    return directory, out


def status(directory: Path) -> dict[str, Any]:
    result = subprocess.run(
        [*CLI, "status", "-c", str(directory / "demo.toml"), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def trainer_starts(directory: Path) -> list[str]:
    """What the trainer said about where it started, once per attempt."""
    log = (directory / "state" / "logs" / "trainer.log").read_text()
    return re.findall(r"^(?:no checkpoint found|resumed from|failed to load).*$", log, flags=re.MULTILINE)


def quarantine_note(directory: Path, name: str) -> dict[str, Any]:
    (note,) = (directory / "state" / "quarantine").glob(f"*/{name}.json")
    data: dict[str, Any] = json.loads(note.read_text())
    return data


def test_the_supervisor_ends_each_fault_with_its_cause_and_finishes_the_run(demo: tuple[Path, str]) -> None:
    data = status(demo[0])
    assert [(a["cause"], a["exit"]) for a in data["attempts"]] == [
        ("crash", "exit code 1"),  # the exception
        ("nan", "killed by SIGTERM"),  # stopped by the supervisor
        ("hang", "killed by SIGTERM"),  # stopped by the supervisor
        ("crash", "killed by SIGKILL"),  # as by the OOM killer
        ("crash", "killed by SIGKILL"),  # the power cut in the middle of a save
        ("completed", "exit code 0"),
    ]
    assert data["state"] == "completed"
    assert data["exit_code"] == 0
    assert data["last_verified_step"] == 60
    assert "training finished at step 60" in (demo[0] / "state" / "logs" / "trainer.log").read_text()


def test_the_torn_checkpoint_is_moved_aside_as_rejected(demo: tuple[Path, str]) -> None:
    note = quarantine_note(demo[0], "ckpt_50.pt")
    assert note["verdict"]["ok"] is False
    assert note["reason"].startswith("rejected: ")
    assert (demo[0] / "run" / "checkpoints" / "ckpt_50.pt").exists(), "saved again by the last attempt"


def test_the_checkpoint_saved_after_the_loss_went_nan_is_moved_aside_although_it_verifies(
    demo: tuple[Path, str],
) -> None:
    note = quarantine_note(demo[0], "ckpt_30.pt")
    assert note["verdict"]["ok"] is True, "its weights are finite: only the rollback moves it"
    assert note["reason"] == "saved at or after step 28, when the loss had gone NaN/Inf"


def test_every_relaunch_resumes_from_a_verified_checkpoint_never_from_scratch(demo: tuple[Path, str]) -> None:
    assert trainer_starts(demo[0]) == [
        "no checkpoint found: starting from step 0",
        "resumed from ckpt_20.pt at step 20",  # after the crash at step 23
        "resumed from ckpt_20.pt at step 20",  # after the NaN from step 28: ckpt_30.pt went aside
        "resumed from ckpt_30.pt at step 30",  # after the hang at step 36
        "resumed from ckpt_40.pt at step 40",  # after the SIGKILL at step 41
        "resumed from ckpt_40.pt at step 40",  # after the torn ckpt_50.pt went aside
    ]
    assert "silent-reset" not in status(demo[0])["restarts_by_cause"]


def test_the_account_tells_each_attempt_from_the_ledger(demo: tuple[Path, str]) -> None:
    printed = demo[1]
    account = printed[printed.index("What happened, what the supervisor did") :].splitlines()
    assert [line.split()[:2] for line in account if line.startswith("  #")] == [
        ["#1", "crash"],
        ["#2", "nan"],
        ["#3", "hang"],
        ["#4", "crash"],
        ["#5", "crash"],
        ["#6", "completed"],
    ]
    assert re.findall(r"relaunched from verified step (\d+)", printed) == ["20", "20", "30", "40", "40"]
    assert "     -> relaunched from verified step 20; 3 steps lost" in account  # crashed at 23
    assert "     -> relaunched from verified step 30; 6 steps lost" in account  # hung at 36
    assert (
        "     -> moved ckpt_30.pt aside: saved at or after step 28, when the loss had gone NaN/Inf" in account
    )
    assert any(line.startswith("     -> moved ckpt_50.pt aside: rejected: ") for line in account)
    assert "In all: 6 attempts" in printed
    assert "The supervisor finished training after" in printed


def test_the_demo_never_empties_a_directory_it_did_not_make(tmp_path: Path) -> None:
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    result = subprocess.run(
        [*CLI, "demo", "--dir", str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert "refusing to empty" in result.stderr
    assert precious.read_text() == "keep me"
