"""The run directory and the state around it, as the real CLI and daemon see them: one
preparation for `plan --apply` and the daemon (same plans, same moves, same refusals),
the checkpoint directory pinned and locked, a lost ledger, a config someone else could
write, and a first save torn before any complete state existed."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.support.load import scaled
from tests.support.procs import wait_for
from tests.support.twins import CLI, run_cli, status, twin_command, write_config, write_faults

PATTERN = {"pattern": "ckpt_{step}.pt", "required_keys": ["model", "optimizer", "step"], "step_key": "step"}


def save(path: Path, step: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": torch.nn.Linear(2, 2).state_dict(), "optimizer": {}, "step": step}, path)
    return path


def tear(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def config_for(base: Path, command: list[str] | None = None, **checkpoints: Any) -> Path:
    return write_config(
        base,
        adapter="generic",
        command=command or [sys.executable, "-c", "pass"],
        cwd=base,
        checkpoint_dir=base / "run" / "checkpoints",
        options=PATTERN,
        checkpoints={"quiet_s": 0.05, **checkpoints},
        more={"heartbeat": {"mode": "off"}},
    )


# --- one preparation ----------------------------------------------------------------------


def torn_newest(checkpoints: Path) -> None:
    save(checkpoints / "ckpt_10.pt", 10)
    tear(save(checkpoints / "ckpt_20.pt", 20))


def link_newest(checkpoints: Path) -> None:
    save(checkpoints / "ckpt_10.pt", 10)
    (checkpoints / "ckpt_99.pt").symlink_to("/dev/zero")


def directory_newest(checkpoints: Path) -> None:
    save(checkpoints / "ckpt_10.pt", 10)
    (checkpoints / "ckpt_99.pt").mkdir()


def fifo_newest(checkpoints: Path) -> None:
    save(checkpoints / "ckpt_10.pt", 10)
    os.mkfifo(checkpoints / "ckpt_99.pt")


def nothing_left(checkpoints: Path) -> None:
    save(checkpoints / "ckpt_10.pt", 10)


SCENARIOS: dict[str, Callable[[Path], None]] = {
    "torn newest": torn_newest,
    "link newest": link_newest,
    "directory newest": directory_newest,
    "fifo newest": fifo_newest,
    "a verified state lost": nothing_left,
    "a verified state torn, its copy kept": nothing_left,
}
EARLIER_VERIFIED = ("a verified state lost", "a verified state torn, its copy kept")


def outcome(base: Path) -> dict[str, Any]:
    """What the preparation did, in terms that do not depend on where the run lives."""
    state = base / "state"
    with sqlite3.connect(state / "ledger.sqlite3") as ledger:
        ok, summary, detail = ledger.execute(
            "SELECT ok, summary, detail FROM plans ORDER BY id DESC LIMIT 1"
        ).fetchone()
    notes = sorted((p.name, json.loads(p.read_text())["reason"]) for p in state.glob("quarantine/*/*.json"))
    return {
        "ok": ok,
        "summary": summary.replace(str(base), "BASE"),
        "problem": json.loads(detail)["problem"].replace(str(base), "BASE")
        if json.loads(detail)["problem"]
        else None,
        "moved": notes,
        "left": sorted(p.name for p in (base / "run" / "checkpoints").iterdir()),
    }


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.slow
def test_plan_apply_and_the_daemon_prepare_alike(tmp_path: Path, scenario: str) -> None:
    """The same damaged directory, prepared by `plan --apply` and by the daemon before its
    first launch: the same plan, the same moves, the same refusal."""
    results = {}
    for way in ("plan", "daemon"):
        base = tmp_path / way
        checkpoints = base / "run" / "checkpoints"
        SCENARIOS[scenario](checkpoints)
        config = config_for(base, keep_verified=1 if "copy kept" in scenario else 0)
        if scenario in EARLIER_VERIFIED:
            # It was verified (by an earlier preparation); then it was torn in place.
            assert run_cli("plan", "-c", str(config), "--apply").returncode == 0
            tear(checkpoints / "ckpt_10.pt")
        if way == "plan":
            code = run_cli("plan", "-c", str(config), "--apply").returncode
            refused = code == 1
        else:
            code = run_cli("run", "-c", str(config)).returncode
            refused = code == 3
        assert code in (0, 1, 3), code
        results[way] = {**outcome(base), "refused": refused}
    assert results["plan"] == results["daemon"]
    if scenario == "a verified state lost":
        assert results["plan"]["refused"]
        assert "refusing to let the trainer start from scratch" in results["plan"]["problem"]
    elif scenario == "a verified state torn, its copy kept":
        assert not results["plan"]["refused"]
        assert [name for name, _ in results["plan"]["moved"]] == ["ckpt_10.pt.json"]
        for way in ("plan", "daemon"):
            put_back = torch.load(tmp_path / way / "run" / "checkpoints" / "ckpt_10.pt", weights_only=True)
            assert put_back["step"] == 10
    else:
        assert not results["plan"]["refused"]
        assert results["plan"]["moved"]


@pytest.mark.slow
def test_copies_kept_before_the_run_directory_moved_are_never_put_back_where_it_was(tmp_path: Path) -> None:
    """The user moved the run folder and pointed the config at its new place. Copies
    kept under the old path are not the trainer's files any more: nothing is restored
    there (outside the run), and the plan resumes from what the new place holds."""
    checkpoints = tmp_path / "run" / "checkpoints"
    save(checkpoints / "ckpt_10.pt", 10)
    save(checkpoints / "ckpt_20.pt", 20)
    config = config_for(tmp_path, keep_verified=2)
    assert run_cli("plan", "-c", str(config), "--apply").returncode == 0
    (tmp_path / "run").rename(tmp_path / "moved")
    config.write_text(config.read_text().replace(str(checkpoints), str(tmp_path / "moved" / "checkpoints")))
    tear(tmp_path / "moved" / "checkpoints" / "ckpt_20.pt")

    planned = run_cli("plan", "-c", str(config), "--apply", "--json")
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert json.loads(planned.stdout)["target_step"] == 10
    assert not (tmp_path / "run").exists(), "nothing written where the run used to be"
    assert sorted(p.name for p in (tmp_path / "moved" / "checkpoints").iterdir()) == ["ckpt_10.pt"]
    assert [p.name for p in tmp_path.glob("state/quarantine/*/*.pt")] == ["ckpt_20.pt"]


# --- the checkpoint directory, pinned and locked ------------------------------------------------


def waiting_trainer(trigger: Path, started: Path) -> list[str]:
    """Says it started, then waits for `trigger` and exits 1 (a crash on cue)."""
    code = (
        "import pathlib, sys, time\n"
        "pathlib.Path(sys.argv[2]).write_text('up')\n"
        "while not pathlib.Path(sys.argv[1]).exists():\n    time.sleep(0.05)\n"
        "sys.exit(1)\n"
    )
    return [sys.executable, "-c", code, str(trigger), str(started)]


@pytest.mark.slow
def test_a_checkpoint_directory_swapped_for_a_link_is_never_moved_into(tmp_path: Path) -> None:
    """While the trainer runs, the checkpoint directory is replaced by a link to a foreign
    directory full of 'torn' files. The relaunch's preparation notices that it is not the
    directory pinned at start and refuses: nothing there is moved or read into ours."""
    checkpoints = tmp_path / "run" / "checkpoints"
    save(checkpoints / "ckpt_10.pt", 10)
    trigger, started = tmp_path / "crash-now", tmp_path / "started"
    config = config_for(tmp_path, waiting_trainer(trigger, started))
    with (tmp_path / "out.log").open("wb") as out:
        supervisor = subprocess.Popen([*CLI, "run", "-c", str(config)], stdout=out, stderr=out)
    try:
        wait_for(started.exists, 120, "the trainer to start")
        foreign = tmp_path / "foreign"
        foreign.mkdir()
        (foreign / "ckpt_50.pt").write_bytes(b"someone else's data")
        checkpoints.rename(tmp_path / "run" / "moved-away")
        checkpoints.symlink_to(foreign)
        trigger.write_text("go")
        assert supervisor.wait(timeout=scaled(180)) == 3
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()
    assert (foreign / "ckpt_50.pt").read_bytes() == b"someone else's data"
    assert not list((tmp_path / "state").glob("quarantine/*/ckpt_50.pt"))
    data = status(config)
    assert "is no longer the directory it was at start" in json.dumps(data)


@pytest.mark.slow
def test_two_configs_on_one_checkpoint_directory_never_both_run(tmp_path: Path) -> None:
    first = tmp_path / "first"
    first.mkdir()
    shared = tmp_path / "shared-checkpoints"
    shared.mkdir()
    trigger, started = tmp_path / "stop", tmp_path / "started"
    config_a = config_for(first, waiting_trainer(trigger, started))
    config_a.write_text(
        config_a.read_text().replace(json.dumps(str(first / "run" / "checkpoints")), json.dumps(str(shared)))
    )
    second = tmp_path / "second"  # a copy of the config under another name: its own state_dir
    second.mkdir()
    config_b = second / "copy.toml"
    config_b.write_text(
        config_a.read_text().replace(json.dumps(str(first / "state")), json.dumps(str(second / "state")))
    )
    with (tmp_path / "a.log").open("wb") as out:
        supervisor = subprocess.Popen([*CLI, "run", "-c", str(config_a)], stdout=out, stderr=out)
    try:
        wait_for(started.exists, 120, "the first trainer to start")
        # As systemd would start it: a refused start must not have said READY=1 first.
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
            notify.bind(str(tmp_path / "notify.sock"))
            notify.setblocking(False)
            env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify.sock")}
            refused = subprocess.run(
                [*CLI, "run", "-c", str(config_b)],
                capture_output=True,
                text=True,
                env=env,
                timeout=scaled(180),
            )
            told = []
            with contextlib.suppress(BlockingIOError):
                while True:
                    told.append(notify.recv(4096).decode())
        assert refused.returncode == 2, refused.stdout[-2000:] + refused.stderr
        assert "already watches the checkpoint directory" in refused.stderr
        assert f"pid {supervisor.pid}" in refused.stderr
        assert not [m for m in told if "READY=1" in m], told
    finally:
        trigger.write_text("go")
        supervisor.terminate()
        supervisor.wait(timeout=scaled(120))
    log = second / "state" / "logs" / "trainer.log"
    assert not log.exists() or "=== train-supervisor: attempt" not in log.read_text(), "it never ran"


# --- a lost ledger ---------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["empty", "garbage", "missing"])
@pytest.mark.slow
def test_a_lost_ledger_beside_the_runs_history_stops_everything_with_the_way_forward(
    tmp_path: Path, damage: str
) -> None:
    save(tmp_path / "run" / "checkpoints" / "ckpt_10.pt", 10)
    config = config_for(tmp_path)
    assert run_cli("run", "-c", str(config)).returncode == 0  # completed; a verified copy kept
    ledger = tmp_path / "state" / "ledger.sqlite3"
    for suffix in ("-wal", "-shm"):
        ledger.with_name(ledger.name + suffix).unlink(missing_ok=True)
    if damage == "empty":
        ledger.write_bytes(b"")
    elif damage == "garbage":
        ledger.write_bytes(b"this is not a database" * 100)
    else:
        ledger.unlink()
    again = run_cli("run", "-c", str(config), "--again")
    assert again.returncode == 2, again.stdout[-2000:] + again.stderr
    assert "--new-ledger" in again.stderr
    assert "Nothing was started" in again.stderr
    assert not (tmp_path / "state" / "logs" / "trainer.log").read_text().count("attempt 2"), (
        "nothing launched"
    )
    for command in ("status", "checkpoints"):
        shown = run_cli(command, "-c", str(config))
        assert shown.returncode == 1
        assert len(shown.stderr.strip().splitlines()) == 1
        assert "Traceback" not in shown.stderr
    fresh = run_cli("run", "-c", str(config), "--new-ledger")
    assert fresh.returncode == 0, fresh.stdout[-2000:]
    if damage != "missing":
        (kept,) = tmp_path.glob("state/ledger.sqlite3.damaged-*")
        assert kept.stat().st_size == (0 if damage == "empty" else 2200)


# --- a config someone else can write ------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand a file to another user")
@pytest.mark.parametrize("how", ["world-writable", "another user's", "in another user's folder"])
@pytest.mark.slow
def test_a_config_another_user_could_write_is_never_run(tmp_path: Path, how: str) -> None:
    folder = tmp_path / "runs"
    folder.mkdir()
    config = config_for(folder)
    if how == "world-writable":
        config.chmod(0o666)
    elif how == "another user's":
        os.chown(config, 65534, 65534)
    else:
        os.chown(folder, 65534, 65534)
    refused = run_cli("run", "-c", str(config))
    assert refused.returncode == 2, refused.stdout[-2000:] + refused.stderr
    assert "refusing a config another user can change" in refused.stderr
    assert not (folder / "state").exists(), "nothing was started"
    for apply in ([], ["--apply"]):  # plan moves files and asks the trainer's python too
        planned = run_cli("plan", "-c", str(config), *apply)
        assert planned.returncode == 2, planned.stdout[-2000:] + planned.stderr
        assert "refusing a config another user can change" in planned.stderr
        assert not (folder / "state").exists()
    service = run_cli("install-service", "-c", str(config), "--unit-dir", str(tmp_path / "units"))
    if how == "another user's":
        # A system unit runs it as its owner (User=), who may well write it.
        assert service.returncode == 0, service.stderr
        drop_in = next((tmp_path / "units").glob("*.d/train-supervisor.conf")).read_text()
        assert "\nUser=nobody\n" in drop_in, "unquoted: systemd keeps quotes in a user name"
    else:
        assert service.returncode == 2
        assert not (tmp_path / "units").exists()
    os.chown(folder, 0, 0)
    os.chown(config, 0, 0)
    config.chmod(0o644)
    assert run_cli("run", "-c", str(config)).returncode == 0


# --- a first save torn before any complete state -----------------------------------------------


@pytest.mark.slow
def test_a_torn_first_d_is_no_lost_state_and_the_trainer_starts_over(tmp_path: Path) -> None:
    """VITS's very first save: G_0 lands, D_0 is torn. A G without its D never was a
    resume state: moving D_0 aside and letting the trainer start from scratch loses
    nothing, so the supervisor does (it used to refuse and give up)."""
    from tests.support.vits import vits_root

    root = vits_root(tmp_path, epochs=2)
    write_faults(root, [{"at": "D_0", "kind": "torn"}])
    config = write_config(
        tmp_path,
        adapter="vits",
        command=twin_command("vits_twin.py", "-c", "configs/ljs_base.json", "-m", "ljs_base"),
        cwd=root,
        checkpoint_dir="logs/ljs_base",
    )
    result = run_cli("run", "-c", str(config))
    assert result.returncode == 0, result.stdout[-3000:]
    assert [a["cause"] for a in status(config)["attempts"]] == ["crash", "completed"]
    (moved,) = (tmp_path / "state").glob("quarantine/*/D_0.pth")
    assert moved.stat().st_size > 0
    # Every log line names the attempt it is about (the verifier runs in a task started
    # before attempt 1: its lines used to say attempt 0).
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    verified = [line["attempt"] for line in lines if line["event"] == "checkpoint verified"]
    assert verified
    assert 0 not in verified
    shutil.rmtree(root / "logs")  # (the twin's own files)


@pytest.mark.slow
def test_after_a_nan_rollback_a_torn_first_save_is_no_lost_state_either(tmp_path: Path) -> None:
    """A NaN rollback moved the only verified state aside (the loss went bad before it)
    and the trainer started over; its first save is torn. The state the rollback gave up
    on is no state to keep: a fresh start loses nothing, so it is not refused."""
    import asyncio

    import trainer_adapters
    from supervisor import config as config_module
    from supervisor.checkpoints.from_config import book_for
    from supervisor.checkpoints.prepare import Preparation
    from supervisor.core import Prepared
    from supervisor.ledger import Ledger

    checkpoints = tmp_path / "run" / "checkpoints"
    save(checkpoints / "ckpt_10.pt", 10)
    config_path = config_for(tmp_path, keep_verified=0)
    assert run_cli("plan", "-c", str(config_path), "--apply").returncode == 0

    async def roll_back() -> object:
        config = config_module.load(config_path, for_launch=False)
        layout = trainer_adapters.get(config.adapter.name).layout(config.adapter.options)
        ledger = Ledger.open(config.state_dir)
        book = book_for(config, layout, ledger, lambda kind, level, message: None)
        preparation = Preparation(config, layout, ledger, book, report=lambda kind, level, message: None)
        await preparation.start(1, 10)
        try:
            return await preparation.prepare(1, below_step=10)
        finally:
            preparation.stop()
            await book.validator.close()
            ledger.close()

    assert isinstance(asyncio.run(roll_back()), Prepared)
    assert not (checkpoints / "ckpt_10.pt").exists()
    tear(save(checkpoints / "ckpt_2.pt", 2))
    planned = run_cli("plan", "-c", str(config_path), "--apply")
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert sorted(p.name for p in tmp_path.glob("state/quarantine/*/*.pt")) == ["ckpt_10.pt", "ckpt_2.pt"]
    # A state verified after the rollback counts again.
    save(checkpoints / "ckpt_4.pt", 4)
    assert run_cli("plan", "-c", str(config_path), "--apply").returncode == 0
    tear(checkpoints / "ckpt_4.pt")
    refused = run_cli("plan", "-c", str(config_path), "--apply")
    assert refused.returncode == 1
    assert "refusing to let the trainer start from scratch" in refused.stdout + refused.stderr


# --- names and steps the ledger could not store ---------------------------------------------


@pytest.mark.slow
def test_a_name_that_is_not_utf8_and_a_step_of_20_digits_never_end_the_run(tmp_path: Path) -> None:
    checkpoints = tmp_path / "run" / "checkpoints"
    save(checkpoints / "ckpt_10.pt", 10)
    odd = os.fsdecode(bytes(checkpoints) + b"/voice\xff_20.pt")  # Latin-1 bytes in a name
    save(Path(odd), 20)
    save(checkpoints / "ckpt_99999999999999999999.pt", 5)
    config = write_config(
        tmp_path,
        adapter="generic",
        command=[sys.executable, "-c", "pass"],
        cwd=tmp_path,
        checkpoint_dir=checkpoints,
        checkpoints={"quiet_s": 0.05},
        more={"heartbeat": {"mode": "off"}},
    )
    applied = run_cli("plan", "-c", str(config), "--apply", "--json")
    assert applied.returncode == 0, applied.stdout[-2000:] + applied.stderr
    plan = json.loads(applied.stdout)
    (move,) = plan["moves"]
    assert move["path"].endswith("ckpt_99999999999999999999.pt")
    assert "beyond any training counter" in move["reason"]
    assert plan["target_step"] == 20
    assert "voice" in plan["target"]["model"]
    listed = run_cli("checkpoints", "-c", str(config))
    assert listed.returncode == 0
    assert "voice\\xff_20.pt" in listed.stdout
    # The ledger gives the very same path back: the next preparation knows the verdict.
    again = run_cli("plan", "-c", str(config), "--json")
    assert again.returncode == 0
    assert json.loads(again.stdout)["moves"] == []


@pytest.mark.slow
def test_plan_carries_out_a_nan_rollback_the_supervisor_had_still_to_make(tmp_path: Path) -> None:
    """The loss went NaN around step 20, and the supervisor was stopped before its next
    preparation. `plan` shows, and `plan --apply` makes, the same rollback the daemon
    would: nothing at or after the bound is resumed from (not even our copy), and the
    next supervisor does not roll back again over newer saves."""
    from dataclasses import replace

    from supervisor.core import Phase, State
    from supervisor.core.health import Carry
    from supervisor.ledger import Ledger

    checkpoints = tmp_path / "run" / "checkpoints"
    save(checkpoints / "ckpt_10.pt", 10)
    save(checkpoints / "ckpt_20.pt", 20)
    config = config_for(tmp_path, keep_verified=2)
    assert run_cli("plan", "-c", str(config), "--apply").returncode == 0
    (checkpoints / "ckpt_20.pt").unlink()  # its verified copy would put it back
    ledger = Ledger.open(tmp_path / "state")
    stopped = replace(State(), phase=Phase.STOPPED, attempt=3, carry=Carry(nan_below=20))
    ledger.save_state(config.stem, config, stopped, relaunch_at=None, next_delay_s=0, supervisor_pid=1, now=0)
    ledger.commit()
    ledger.close()

    dry = json.loads(run_cli("plan", "-c", str(config), "--json").stdout)
    assert dry["target_step"] == 10
    applied = run_cli("plan", "-c", str(config), "--apply", "--json")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert json.loads(applied.stdout)["target_step"] == 10
    assert sorted(p.name for p in checkpoints.iterdir()) == ["ckpt_10.pt"]
    assert not list((tmp_path / "state").glob("verified/step-20/*/*.pt")), (
        "the copy after the bound is dropped"
    )
    save(checkpoints / "ckpt_30.pt", 30)  # the trainer, started by hand, trained on
    assert json.loads(run_cli("plan", "-c", str(config), "--json").stdout)["target_step"] == 30


@pytest.mark.slow
def test_a_restore_into_a_removed_subfolder_makes_it_and_never_follows_a_link_there(tmp_path: Path) -> None:
    checkpoints = tmp_path / "run" / "checkpoints"
    save(checkpoints / "sub" / "ckpt_10.pt", 10)
    config = config_for(tmp_path, keep_verified=2)
    assert run_cli("plan", "-c", str(config), "--apply").returncode == 0
    shutil.rmtree(checkpoints / "sub")
    restored = run_cli("plan", "-c", str(config), "--apply")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert torch.load(checkpoints / "sub" / "ckpt_10.pt", weights_only=True)["step"] == 10

    shutil.rmtree(checkpoints / "sub")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (checkpoints / "sub").symlink_to(elsewhere)
    refused = run_cli("plan", "-c", str(config), "--apply")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert list(elsewhere.iterdir()) == [], "nothing written through the link"
