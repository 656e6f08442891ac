"""End to end: the real `train-supervisor` CLI around real trainer processes and signals."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from supervisor.checkpoints.rereads import VALIDATOR_RETRIES
from tests.support.ckpt_factory import write_torch
from tests.support.load import scaled
from tests.support.procs import alive, behave, read_pid, wait_for
from tests.support.stalling_worker import noted, stalling_env
from tests.support.twins import TRAINERS

CLI = [sys.executable, "-m", "supervisor.cli"]
WIDE = {**os.environ, "COLUMNS": "400"}  # status folds the detail column to the terminal's width
FAST = {"backoff_initial_s": 0.05, "backoff_max_s": 0.2, "jitter": 0.1, "stable_after_s": 60}


def toml_value(value: object) -> str:
    return json.dumps(value) if not isinstance(value, bool) else str(value).lower()


def make_config(tmp_path: Path, command: list[str], name: str = "run", **sections: dict[str, Any]) -> Path:
    restart = {**FAST, "max_attempts_without_progress": 3, **sections.pop("restart", {})}
    stop = {"grace_s": 2, **sections.pop("stop", {})}
    lines = ["[run]", f"command = {json.dumps(command)}", f'state_dir = "{tmp_path / "state"}"']
    for section, values in {"restart": restart, "stop": stop, **sections}.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in values.items()]
    path = tmp_path / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


class Supervisor:
    """A `train-supervisor run` process; its stdout (JSON lines) goes to a file."""

    def __init__(self, config: Path, *extra: str) -> None:
        self.out = config.with_suffix(f".{os.getpid()}.{id(self)}.log")
        with self.out.open("wb") as fh:
            self.proc = subprocess.Popen(
                [*CLI, "run", "-c", str(config), *extra], stdout=fh, stderr=subprocess.STDOUT
            )

    def wait(self, timeout: float = 60) -> int:
        return self.proc.wait(timeout=scaled(timeout))

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.read_text().splitlines() if line.startswith("{")]

    def stop(self) -> None:
        """Stop gracefully (the supervisor stops its trainer), SIGKILL as a last resort."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=scaled(15))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def kill_trainers_under(directory: Path) -> None:
    """Trainers run in their own session: a failed test must not leave them running."""
    for proc in psutil.process_iter(["pid", "cwd", "environ"]):
        info = proc.info
        in_dir = (info["cwd"] or "").startswith(str(directory))
        if in_dir and "TRAIN_SUPERVISOR_ATTEMPT" in (info["environ"] or {}):
            with contextlib.suppress(psutil.Error):
                proc.kill()


@pytest.fixture
def supervisors(tmp_path: Path) -> Any:
    started: list[Supervisor] = []

    def start(config: Path, *extra: str) -> Supervisor:
        sup = Supervisor(config, *extra)
        started.append(sup)
        return sup

    yield start
    for sup in started:
        sup.stop()
    kill_trainers_under(tmp_path)


def status(config: Path) -> dict[str, Any]:
    result = subprocess.run(
        [*CLI, "status", "-c", str(config), "--json"], capture_output=True, text=True, check=True
    )
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_a_finishing_trainer_makes_the_supervisor_exit_0(tmp_path: Path, supervisors: Any) -> None:
    config = make_config(tmp_path, behave("exit", "0"))
    sup = supervisors(config)
    assert sup.wait() == 0
    data = status(config)
    assert (data["state"], data["attempt"], data["last_cause"]) == ("completed", 1, "completed")
    assert data["attempts"][0]["exit"] == "exit code 0"
    lines = sup.lines()
    assert lines, "JSON log lines when stdout is not a terminal"
    assert all(line["run"] == "run" and "attempt" in line for line in lines)
    assert any(line.get("kind") == "completed" and line["attempt"] == 1 for line in lines)


def test_a_completed_run_is_not_relaunched_unless_asked_again(tmp_path: Path, supervisors: Any) -> None:
    config = make_config(tmp_path, behave("exit", "0"))
    assert supervisors(config).wait() == 0
    again = supervisors(config)
    assert again.wait() == 0
    data = status(config)
    assert (data["state"], data["attempt"]) == ("completed", 1), "nothing was launched"
    assert "completed already" in data["events"][-1]["message"]
    assert supervisors(config, "--again").wait() == 0
    assert (status(config)["state"], status(config)["attempt"]) == ("completed", 2)


def test_a_crash_loop_gives_up_with_exit_3(tmp_path: Path, supervisors: Any) -> None:
    config = make_config(tmp_path, behave("exit", "1"))
    sup = supervisors(config)
    assert sup.wait() == 3
    data = status(config)
    assert data["state"] == "gave_up"
    assert [a["cause"] for a in data["attempts"]] == ["crash", "crash", "crash"]
    assert data["attempts"][0]["detail"] == "last output: exiting with 1"
    final = sup.lines()[-1]
    assert final["level"] == "error"
    assert final["event"].startswith("giving up: 3 consecutive attempts without progress")


def test_crashes_are_relaunched_until_the_trainer_finishes(tmp_path: Path, supervisors: Any) -> None:
    counter = tmp_path / "starts"
    config = make_config(
        tmp_path,
        behave("crash-until", str(counter), "4"),
        restart={"backoff_initial_s": 0, "backoff_max_s": 0, "max_attempts_without_progress": 5},
    )
    assert supervisors(config).wait() == 0
    assert len(counter.read_text().split()) == 4
    data = status(config)
    assert [a["cause"] for a in data["attempts"]] == ["crash", "crash", "crash", "completed"]
    assert data["restarts"] == 3


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_stops_the_trainer_with_grace_and_exits_0(
    tmp_path: Path, supervisors: Any, signum: int
) -> None:
    pid_file = tmp_path / "trainer.pid"
    config = make_config(tmp_path, behave("fork", str(pid_file)))
    sup = supervisors(config)
    grandchild = wait_for(lambda: read_pid(pid_file), what="the trainer's grandchild")
    sup.proc.send_signal(signum)
    assert sup.wait() == 0
    assert not alive(grandchild)
    data = status(config)
    assert data["state"] == "stopped"
    assert data["attempts"][-1]["cause"] == "stopped"
    assert not data["supervisor_running"]


def test_a_second_supervisor_for_the_same_run_is_refused(tmp_path: Path, supervisors: Any) -> None:
    pid_file = tmp_path / "trainer.pid"
    config = make_config(tmp_path, behave("sleep", str(pid_file)))
    first = supervisors(config)
    trainer = wait_for(lambda: read_pid(pid_file), what="the trainer")
    second = subprocess.run(
        [*CLI, "run", "-c", str(config)], capture_output=True, text=True, timeout=scaled(30), check=False
    )
    assert second.returncode == 2
    assert f"another supervisor (pid {first.proc.pid}) is already running this run" in second.stderr
    assert read_pid(pid_file) == trainer
    assert alive(trainer)
    data = status(config)
    assert (data["supervisor_running"], data["supervisor_pid"], data["state"]) == (
        True,
        first.proc.pid,
        "running",
    )
    first.proc.terminate()
    assert first.wait() == 0


def test_a_trainer_orphaned_by_a_killed_supervisor_is_stopped_before_relaunch(
    tmp_path: Path, supervisors: Any
) -> None:
    pid_file = tmp_path / "trainer.pid"
    config = make_config(tmp_path, behave("sleep", str(pid_file)))
    first = supervisors(config)
    old = wait_for(lambda: read_pid(pid_file), what="the first trainer")
    first.proc.kill()
    first.wait()
    assert alive(old), "the trainer runs in its own session and outlives its supervisor"

    second = supervisors(config)
    new = wait_for(lambda: (pid := read_pid(pid_file)) != old and pid, what="the relaunched trainer")
    assert not alive(old)
    data = wait_for(lambda: (d := status(config))["state"] == "running" and d, what="running")
    assert data["attempt"] == 2
    assert data["attempts"][0]["cause"] == "interrupted"
    assert data["attempts_without_progress"] == 1
    kinds = [e["kind"] for e in data["events"]]
    assert kinds == ["launched", "interrupted", "reclaimed", "launched"]
    second.proc.terminate()
    assert second.wait() == 0
    assert not alive(new)


def test_counters_survive_a_restart_of_the_supervisor(tmp_path: Path, supervisors: Any) -> None:
    config = make_config(tmp_path, behave("exit", "1"), restart={"max_attempts_without_progress": 2})
    assert supervisors(config).wait() == 3
    assert status(config)["attempt"] == 2
    # The same crash loop after a restart (e.g. a reboot) gives up after one more attempt.
    assert supervisors(config).wait() == 3
    assert status(config)["attempt"] == 3
    # Starting to count afresh is explicit.
    assert supervisors(config, "--reset-counters").wait() == 3
    assert status(config)["attempt"] == 5


def test_a_trainer_that_vanishes_from_disk_counts_as_failed_launches(
    tmp_path: Path, supervisors: Any
) -> None:
    script = tmp_path / "train.sh"
    script.write_text('#!/bin/sh\nrm -- "$0"\nexit 1\n')
    script.chmod(0o755)
    config = make_config(tmp_path, [str(script)])
    assert supervisors(config).wait() == 3
    data = status(config)
    details = [a["detail"] for a in data["attempts"]]
    assert data["attempts"][0]["exit"] == "exit code 1"
    assert all(d.startswith("could not start: FileNotFoundError") for d in details[1:])


def test_status_during_backoff_and_a_stop_while_waiting(tmp_path: Path, supervisors: Any) -> None:
    config = make_config(
        tmp_path, behave("exit", "7"), restart={"backoff_initial_s": 30, "backoff_max_s": 60}
    )
    sup = supervisors(config)
    data = wait_for(lambda: (d := status(config))["state"] == "backoff" and d, what="backoff")
    assert (data["attempt"], data["restarts"], data["last_cause"], data["last_exit"]) == (
        1,
        0,
        "crash",
        "exit code 7",
    )
    assert 0 < data["next_relaunch_in_s"] <= 60
    assert data["attempts_without_progress"] == 1
    human = subprocess.run(
        [*CLI, "status", "-c", str(config)], capture_output=True, text=True, check=True
    ).stdout
    assert "backoff" in human
    assert "relaunch in" in human
    assert "exit code 7" in human
    sup.proc.terminate()
    assert sup.wait() == 0
    assert status(config)["state"] == "stopped"


def test_status_of_a_run_never_started(tmp_path: Path) -> None:
    config = make_config(tmp_path, behave("exit", "0"))
    assert status(config)["state"] == "not_started"
    human = subprocess.run(
        [*CLI, "status", "-c", str(config)], capture_output=True, text=True, check=True
    ).stdout
    assert "not_started" in human
    assert not (tmp_path / "state").exists()


def test_status_shows_the_running_supervisor_live_and_the_ledger_without_it(
    tmp_path: Path, supervisors: Any
) -> None:
    beats = [sys.executable, str(TRAINERS / "beats.py"), "100000", "0.05"]
    config = make_config(tmp_path, beats)
    sup = supervisors(config)
    data = wait_for(lambda: (d := status(config))["last_progress_sign"] and d, what="a heartbeat")
    assert (data["source"], data["live_note"], data["state"]) == ("live", None, "running")
    assert data["last_progress_sign"].startswith("heartbeat at ")
    assert 0 <= data["last_progress_age_s"] < 60
    assert data["trainer_pid"] == data["attempts"][-1]["pid"]
    assert data["supervisor_started_at"] is not None
    assert data["uptime_s"] >= 0
    human = subprocess.run(
        [*CLI, "status", "-c", str(config)], capture_output=True, text=True, check=True
    ).stdout
    assert f"running (pid {sup.proc.pid}, up " in human
    assert f"trainer pid {data['trainer_pid']}" in human
    assert "ago (heartbeat at " in human

    (tmp_path / "state" / "status.sock").unlink()  # the ledger is the fallback, with a note
    data = status(config)
    assert (data["source"], data["state"], data["trainer_pid"]) == ("ledger", "running", None)
    assert data["live_note"].startswith("live status unavailable: no live status socket at ")
    assert data["uptime_s"] >= 0, "the supervisor's start time comes from /proc then"
    human = subprocess.run(
        [*CLI, "status", "-c", str(config)], capture_output=True, text=True, check=True
    ).stdout
    assert "live status unavailable" in human

    sup.proc.terminate()
    assert sup.wait() == 0
    data = status(config)
    assert (data["source"], data["live_note"], data["uptime_s"]) == ("ledger", None, None)


def test_status_prints_what_the_trainer_said_even_when_it_looks_like_markup(
    tmp_path: Path, supervisors: Any
) -> None:
    said = "loading [/data/ljs] [bold]done"
    config = make_config(tmp_path, ["sh", "-c", f"echo '{said}'; exit 1"])
    assert supervisors(config).wait() == 3
    human = subprocess.run(
        [*CLI, "status", "-c", str(config)], capture_output=True, text=True, check=True, env=WIDE
    ).stdout
    assert said in human


def test_version_and_help() -> None:
    version = subprocess.run([*CLI, "--version"], capture_output=True, text=True, check=True).stdout
    assert version.startswith("train-supervisor, version ")
    helptext = subprocess.run([*CLI, "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("run", "status", "config", "demo"):
        assert command in helptext


def test_an_internal_error_stops_the_trainer_and_exits_1(tmp_path: Path, supervisors: Any) -> None:
    pid_file = tmp_path / "trainer.pid"
    config = make_config(tmp_path, behave("sleep", str(pid_file)))
    sup = supervisors(config)
    trainer = wait_for(lambda: read_pid(pid_file), what="the trainer")
    wait_for(lambda: status(config)["state"] == "running", what="running")
    # Another process holds the ledger's write lock: the supervisor's next write fails.
    blocker = sqlite3.connect(tmp_path / "state" / "ledger.sqlite3", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        sup.proc.terminate()
        assert sup.wait() == 1
    finally:
        blocker.rollback()
        blocker.close()
    assert not alive(trainer), "a failing supervisor must not leave its trainer unsupervised"
    errors = [line for line in sup.lines() if line["level"] == "error"]
    assert errors[-1]["event"] == "internal error; the supervisor exits"


def test_a_stop_during_the_boot_reclaim_is_honoured_and_a_second_one_kills(
    tmp_path: Path, supervisors: Any
) -> None:
    ready = tmp_path / "ready"
    config = make_config(tmp_path, behave("ignore-term", str(ready)), stop={"grace_s": 60})
    first = supervisors(config)
    orphan = wait_for(lambda: read_pid(ready), what="the first trainer")
    first.proc.kill()
    first.wait()
    second = supervisors(config)
    wait_for(lambda: any(e["kind"] == "interrupted" for e in status(config)["events"]), what="the reclaim")
    second.proc.terminate()  # the orphan ignores SIGTERM and the grace is 60 s ...
    wait_for(lambda: any(line.get("kind") == "stopping" for line in second.lines()), what="the stop")
    second.proc.terminate()  # ... so the second request kills it now
    assert second.wait(timeout=30) == 0
    assert not alive(orphan)
    data = status(config)
    assert (data["state"], data["attempt"]) == ("stopped", 1), "nothing was launched"
    assert data["attempts"][0]["cause"] == "interrupted"


def test_a_supervisor_killed_during_backoff_keeps_its_counters(tmp_path: Path, supervisors: Any) -> None:
    config = make_config(
        tmp_path,
        behave("exit", "1"),
        restart={"backoff_initial_s": 60, "backoff_max_s": 60, "max_attempts_without_progress": 2},
    )
    first = supervisors(config)
    wait_for(lambda: status(config)["state"] == "backoff", what="backoff")
    first.proc.kill()
    first.wait()
    # One more failure makes two in a row: the restarted supervisor gives up after it.
    assert supervisors(config).wait() == 3
    data = status(config)
    assert (data["state"], data["attempt"]) == ("gave_up", 2)


def test_two_configs_may_not_share_one_state_dir(tmp_path: Path, supervisors: Any) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = make_config(tmp_path / "a", behave("exit", "0"), name="train")
    second = (tmp_path / "b" / "train.toml").open("w")
    second.write(first.read_text())
    second.close()
    assert supervisors(first).wait() == 0
    result = subprocess.run(
        [*CLI, "run", "-c", str(tmp_path / "b" / "train.toml")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert f"belongs to the run configured in {first}" in result.stderr


def test_on_a_terminal_the_log_is_for_people(tmp_path: Path) -> None:
    config = make_config(tmp_path, behave("exit", "0"))
    leader, follower = pty.openpty()
    proc = subprocess.Popen([*CLI, "run", "-c", str(config)], stdout=follower, stderr=follower)
    os.close(follower)
    assert proc.wait(timeout=scaled(60)) == 0
    output = b""
    with contextlib.suppress(OSError):  # EIO once the terminal has no writer left
        while chunk := os.read(leader, 65536):
            output += chunk
    os.close(leader)
    text = re.sub(r"\x1b\[[0-9;]*m", "", output.decode(errors="replace"))  # colours
    assert "training finished: attempt 1 exited 0" in text
    assert "run=run" in text
    assert "attempt=1" in text
    assert not any(line.lstrip().startswith("{") for line in text.splitlines())


def test_the_daemon_never_imports_torch() -> None:
    """Every module of the daemon's package, except the validator's worker process (its
    entry point and the checks only it imports)."""
    code = (
        "import pkgutil, importlib, sys, supervisor\n"
        "for m in pkgutil.walk_packages(supervisor.__path__, 'supervisor.'):\n"
        "    if not m.name.startswith('supervisor.validator.worker') and not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('ok', len(sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")


def test_housekeeping_writes_a_status_line_now_and_then(tmp_path: Path, supervisors: Any) -> None:
    config = make_config(
        tmp_path,
        behave("sleep", str(tmp_path / "pid")),
        housekeeping={"status_every_s": 0.2, "disk_check_s": 0.2},
    )
    sup = supervisors(config)
    wait_for(lambda: len([x for x in sup.lines() if x["event"] == "status"]) >= 2, what="two status lines")
    sup.stop()
    line = next(x for x in sup.lines() if x["event"] == "status" and x["phase"] == "running")
    assert line["attempt"] == 1
    assert line["trainer_pid"] == read_pid(tmp_path / "pid")
    assert line["quarantined_files"] == 0
    assert not [x for x in sup.lines() if x.get("logger", "").startswith("apscheduler")]


def test_a_file_the_validator_keeps_failing_on_is_retried_a_bounded_number_of_times(
    tmp_path: Path, supervisors: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoints = tmp_path / "ckpt"
    checkpoints.mkdir()
    stalled = checkpoints / "ckpt_10.pt"
    mark = tmp_path / "stalls"
    for name, value in stalling_env(stalled, mark).items():
        monkeypatch.setenv(name, value)  # the supervisor's worker hangs on exactly this file
    config = make_config(
        tmp_path,
        behave("sleep", str(tmp_path / "pid")),
        adapter={"name": "generic", "checkpoint_dir": str(checkpoints), "pattern": "ckpt_{step}.pt"},
        checkpoints={"validation_timeout_s": 0.5, "rescan_s": 0.2, "quiet_s": 0.1},
        heartbeat={"mode": "off"},
    )
    sup = supervisors(config)
    wait_for(lambda: read_pid(tmp_path / "pid"), what="the trainer")
    # The first try goes to the worker started with the supervisor once it has imported
    # torch, so it stalls on the file. (A retry's fresh worker stalls too, or is still
    # importing torch when its 0.5 s are up.)
    wait_for(lambda: noted(mark, "ready"), 60, "the validator worker to import torch")
    write_torch(stalled, step=10)  # lands while the trainer runs

    def failures() -> int:
        return len([x for x in sup.lines() if x["event"] == "could not verify a checkpoint"])

    wait_for(lambda: failures() == 1 + VALIDATOR_RETRIES, 90, "the first try and every retry")
    with sqlite3.connect(tmp_path / "state" / "ledger.sqlite3") as ledger:
        told = ledger.execute("SELECT COUNT(*) FROM events WHERE kind = 'unverifiable'").fetchone()[0]
    assert told == 1, "said once, not at every retry"
    assert noted(mark, "stalled") >= 1, "the first try stalled in the worker"
    time.sleep(2)  # ten more rescans when idle, fewer when busy: a miss can't show a false retry
    assert failures() == 1 + VALIDATOR_RETRIES
