"""End to end: checkpoints verified as they land, bad ones moved aside, and every
relaunch resumes from the newest verified state — with the real CLI, a real torch
trainer (the demo trainer, which saves and resumes like VITS) and real files."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.load import scaled, torch_imports
from tests.support.stalling_worker import noted, stalling_env

CLI = [sys.executable, "-m", "supervisor.cli"]
TWIN = [sys.executable, "-m", "supervisor_demo.trainer"]


def twin_config(
    tmp_path: Path,
    faults: list[dict[str, Any]],
    steps: int = 40,
    *,
    step_time: float = 0.01,
    latest: bool = False,
    checkpoints: dict[str, Any] | None = None,
    **restart: Any,
) -> Path:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run / "faults.json").write_text(json.dumps(faults))
    command = [*TWIN, "--run-dir", str(run), "--steps", str(steps), "--save-every", "10"]
    command += ["--step-time", str(step_time), *(["--latest"] if latest else [])]
    restart = {"backoff_initial_s": 0.1, "backoff_max_s": 0.2, "stable_after_s": 600, **restart}
    checkpoints = {"quiet_s": 0.2, "verify_wait_s": 60, **(checkpoints or {})}
    lines = [
        "[run]",
        f"command = {json.dumps(command)}",
        f'state_dir = "{tmp_path / "state"}"',
        "[adapter]",
        'name = "generic"',
        'checkpoint_dir = "run/checkpoints"',
        'pattern = "ckpt_{step}.pt"',
        'latest = "last.pt"',
        'required_keys = ["model", "optimizer", "step"]',
        'step_key = "step"',
        "[restart]",
        *[f"{key} = {json.dumps(value)}" for key, value in restart.items()],
        "[checkpoints]",
        *[f"{key} = {json.dumps(value)}" for key, value in checkpoints.items()],
    ]
    path = tmp_path / "twin.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=scaled(timeout), check=False)


def status(config: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(run_cli("status", "-c", str(config), "--json").stdout)
    return data


def trainer_said(tmp_path: Path) -> list[str]:
    log = tmp_path / "state" / "logs" / "trainer.log"
    prefixes = ("resumed from", "no checkpoint found", "failed to load", "training finished")
    return [line for line in log.read_text().splitlines() if line.startswith(prefixes)]


def test_left_alone_the_twin_starts_over_on_a_torn_newest_checkpoint(tmp_path: Path) -> None:
    """The control experiment: without the supervisor, history is lost."""
    config = twin_config(tmp_path, [{"at_step": 30, "kind": "torn"}])
    command = json.loads(config.read_text().splitlines()[1].split("=", 1)[1])
    first = subprocess.run(command, capture_output=True, text=True, timeout=scaled(120), check=False)
    assert first.returncode == -9
    again = subprocess.run(command, capture_output=True, text=True, timeout=scaled(120), check=False)
    assert "failed to load ckpt_30.pt (RuntimeError); starting from step 0" in again.stdout


def test_a_torn_checkpoint_is_quarantined_and_the_trainer_resumes_from_the_verified_one(
    tmp_path: Path,
) -> None:
    config = twin_config(tmp_path, [{"at_step": 30, "kind": "torn"}], checkpoints={"min_free_gb": 10**9})
    result = run_cli("run", "-c", str(config))
    assert result.returncode == 0, result.stdout[-3000:]
    assert trainer_said(tmp_path) == [
        "no checkpoint found: starting from step 0",
        "resumed from ckpt_20.pt at step 20",
        "training finished at step 40",
    ]
    (moved,) = (tmp_path / "state" / "quarantine").glob("*/ckpt_30.pt")
    note = json.loads(moved.with_name("ckpt_30.pt.json").read_text())
    assert note["original_path"] == str(tmp_path / "run" / "checkpoints" / "ckpt_30.pt")
    assert note["reason"].startswith("rejected: ")
    assert note["verdict"]["ok"] is False
    data = status(config)
    assert data["state"] == "completed"
    assert data["last_verified_step"] == 40
    assert data["last_plan"]["summary"].startswith(
        "resume from step 20 (ckpt_20.pt); move aside 1: ckpt_30.pt"
    )
    listed = [
        json.loads(line) for line in run_cli("checkpoints", "-c", str(config), "--json").stdout.splitlines()
    ]
    verdicts = [(Path(c["path"]).name, c["verdict"]) for c in listed]
    # Both versions of ckpt_30: the torn one, and the good one saved after the resume.
    assert [v for name, v in verdicts if name == "ckpt_30.pt"] == ["rejected", "ok"]
    assert ("ckpt_40.pt", "ok") in verdicts
    copies = sorted(p.name for p in (tmp_path / "state" / "verified").glob("step-*"))
    assert copies == ["step-30", "step-40"], "verified copies: the newest keep_verified (2) steps"
    with sqlite3.connect(tmp_path / "state" / "ledger.sqlite3") as ledger:
        warnings = ledger.execute("SELECT message FROM events WHERE kind = 'disk_space'").fetchall()
    assert len(warnings) == 1, "less than min_free_gb free is said once, not at every relaunch"
    assert "free on the checkpoint filesystem" in warnings[0][0]


def test_a_torn_in_place_latest_file_is_restored_from_its_verified_copy(tmp_path: Path) -> None:
    # Like F5-TTS's model_last.pt: one name, rewritten in place, always preferred on resume.
    config = twin_config(tmp_path, [{"at_step": 30, "kind": "torn"}], latest=True, step_time=0.05)
    result = run_cli("run", "-c", str(config))
    assert result.returncode == 0, result.stdout[-3000:]
    assert trainer_said(tmp_path) == [
        "no checkpoint found: starting from step 0",
        "resumed from last.pt at step 20",
        "training finished at step 40",
    ]
    (torn,) = (tmp_path / "state" / "quarantine").glob("*/last.pt")
    assert torn.stat().st_size < (tmp_path / "run" / "checkpoints" / "last.pt").stat().st_size
    plan = status(config)["last_plan"]["summary"]
    assert plan == "resume from step 20 (last.pt); move aside 1: last.pt; restore 1: last.pt"


def test_checkpoint_progress_keeps_a_crashing_run_going(tmp_path: Path) -> None:
    # Three crashes, but each attempt first saves a newer checkpoint: that is progress,
    # so a give-up limit of 2 is never reached.
    faults = [{"at_step": s, "kind": "exception"} for s in (15, 25, 35)]
    config = twin_config(tmp_path, faults, max_attempts_without_progress=2)
    result = run_cli("run", "-c", str(config))
    assert result.returncode == 0, result.stdout[-3000:]
    assert [a["cause"] for a in status(config)["attempts"]] == ["crash", "crash", "crash", "completed"]


def test_crashes_without_a_newer_verified_checkpoint_end_in_a_give_up(tmp_path: Path) -> None:
    # It crashes at step 15 every time: after the first attempt saved step 10, no attempt
    # ever gets further. Attempt 1 made progress; attempts 2 and 3 did not: give up.
    config = twin_config(
        tmp_path, [{"at_step": 15, "kind": "exception", "repeat": True}], max_attempts_without_progress=2
    )
    result = run_cli("run", "-c", str(config))
    assert result.returncode == 3, result.stdout[-3000:]
    data = status(config)
    assert (data["state"], data["attempt"], data["last_verified_step"]) == ("gave_up", 3, 10)


def test_a_checkpoint_saved_just_before_the_last_allowed_crash_counts_as_progress(tmp_path: Path) -> None:
    # Attempt 1 dies at step 5 (no checkpoint); attempt 2 saves step 10 and dies at once,
    # before the file has landed. With max 2, only waiting for that verdict keeps it going.
    faults = [{"at_step": 5, "kind": "exception"}, {"at_step": 10, "kind": "exception"}]
    config = twin_config(
        tmp_path, faults, steps=20, max_attempts_without_progress=2, checkpoints={"quiet_s": 1.0}
    )
    result = run_cli("run", "-c", str(config))
    assert result.returncode == 0, result.stdout[-3000:]
    assert [a["cause"] for a in status(config)["attempts"]] == ["crash", "crash", "completed"]
    assert "resumed from ckpt_10.pt at step 10" in trainer_said(tmp_path)


@pytest.fixture
def checkpoint_dir(tmp_path: Path) -> Path:
    """ckpt_10 (good), ckpt_20 (good), ckpt_30 (torn), written by the twin itself."""
    config = twin_config(tmp_path, [{"at_step": 30, "kind": "torn"}])
    command = json.loads(config.read_text().splitlines()[1].split("=", 1)[1])
    subprocess.run(command, capture_output=True, timeout=scaled(120), check=False)
    return tmp_path / "run" / "checkpoints"


def test_verify_says_which_files_the_trainer_could_resume_from(checkpoint_dir: Path, tmp_path: Path) -> None:
    good, torn = checkpoint_dir / "ckpt_20.pt", checkpoint_dir / "ckpt_30.pt"
    ok = run_cli("verify", "--adapter", "generic", "--json", str(good))
    assert ok.returncode == 0, ok.stderr
    (line,) = [json.loads(x) for x in ok.stdout.splitlines()]
    assert (line["path"], line["ok"], line["reason"]) == (str(good), True, None)
    mixed = run_cli(
        "verify", "--adapter", "generic", "--json", str(good), str(torn), str(tmp_path / "nope.pt")
    )
    assert mixed.returncode == 1
    results = [json.loads(x) for x in mixed.stdout.splitlines()]
    assert [r["ok"] for r in results] == [True, False, False]
    assert results[2]["reason"] == "not found"
    assert results[1]["step"] == 30, "the step its name says"
    human = run_cli("verify", "--adapter", "generic", str(torn))
    assert human.returncode == 1
    assert human.stdout.startswith(f"REJECTED  {torn}: ")


def test_verify_without_an_adapter_says_it_cannot_tell(checkpoint_dir: Path) -> None:
    result = run_cli("verify", str(checkpoint_dir / "ckpt_20.pt"))
    assert result.returncode == 2
    assert "cannot tell which trainer wrote" in result.stderr


def test_plan_shows_then_applies_without_launching(checkpoint_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "twin.toml"
    dry = run_cli("plan", "-c", str(config), "--json")
    assert dry.returncode == 0, dry.stderr
    planned = json.loads(dry.stdout)
    assert planned["target_step"] == 20
    assert [Path(m["path"]).name for m in planned["moves"]] == ["ckpt_30.pt"]
    assert planned["applied"] is False
    assert (checkpoint_dir / "ckpt_30.pt").exists(), "a dry run changes nothing"
    applied = run_cli("plan", "-c", str(config), "--apply")
    assert applied.returncode == 0, applied.stderr
    assert "applied." in applied.stdout
    assert not (checkpoint_dir / "ckpt_30.pt").exists()
    assert list((tmp_path / "state" / "quarantine").glob("*/ckpt_30.pt"))
    again = json.loads(run_cli("plan", "-c", str(config), "--json").stdout)
    assert (again["moves"], again["target_step"]) == ([], 20)


def test_a_validator_that_cannot_judge_the_newest_file_never_causes_a_move_or_a_fresh_start(
    checkpoint_dir: Path, tmp_path: Path
) -> None:
    config = tmp_path / "twin.toml"
    (checkpoint_dir / "ckpt_30.pt").unlink()  # keep ckpt_10 and ckpt_20, both good
    # A fresh worker imports torch before it answers: ckpt_10 must fit, when busy too.
    budget = round(torch_imports(2), 1)
    text = config.read_text().replace("[checkpoints]", f"[checkpoints]\nvalidation_timeout_s = {budget}")
    config.write_text(text)
    stalled = checkpoint_dir / "ckpt_20.pt"
    env = {**os.environ, **stalling_env(stalled, tmp_path / "stalls")}  # the worker hangs on this file
    result = subprocess.run(
        [*CLI, "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=scaled(120),
        env=env,
        check=False,
    )
    assert result.returncode == 3, result.stdout[-3000:]
    # The worker ran with the hook; whether it got to the file before the timeout or was
    # still importing torch (a loaded machine), it never answered.
    assert noted(tmp_path / "stalls", "started") >= 1, "the supervisor's worker ran with our PYTHONPATH"
    assert stalled.exists(), "a file the validator could not judge stays where it is"
    assert not (tmp_path / "state" / "quarantine").exists()
    data = status(config)
    assert data["attempt"] == 0, "nothing was launched"
    assert "REFUSED: cannot verify" in data["last_plan"]["summary"]
    assert "cannot verify" in data["events"][-1]["message"]


def test_a_verified_state_lost_afterwards_is_never_replaced_by_a_fresh_start(tmp_path: Path) -> None:
    # Run 1 verifies ckpt_10, then crashes at step 15 until it gives up. Then the only
    # checkpoint is damaged on disk, and no verified copy is kept: the next supervisor
    # refuses to launch rather than let the trainer start again from step 0.
    faults = [{"at_step": 15, "kind": "exception", "repeat": True}]
    config = twin_config(
        tmp_path, faults, steps=20, max_attempts_without_progress=1, checkpoints={"keep_verified": 0}
    )
    assert run_cli("run", "-c", str(config)).returncode == 3
    assert status(config)["last_verified_step"] == 10
    ckpt = tmp_path / "run" / "checkpoints" / "ckpt_10.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    attempts_before = status(config)["attempt"]
    again = run_cli("run", "-c", str(config), "--reset-counters")
    assert again.returncode == 3, again.stdout[-3000:]
    data = status(config)
    assert data["attempt"] == attempts_before, "nothing was launched"
    assert "refusing to let the trainer start from scratch" in data["events"][-1]["message"]
    assert ckpt.exists(), "the damaged file stays where it is: the plan was refused"
