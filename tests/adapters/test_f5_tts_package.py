"""What the real F5-TTS trainer did under the supervisor, on twins that do the same:
its Hydra entry writes below the *package root* whatever the cwd, rewrites model_last.pt in
place (a loaded writer stalls mid-save), can leave a torn model_last.pt as it exits 0, and
its crashes end with Hydra's hint instead of the error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch

from tests.support.load import scaled
from tests.support.twins import TRAINERS, run_cli, status, write_config, write_faults

TRAIN_PY = f"""import sys
sys.path.insert(0, {str(TRAINERS)!r})
from f5_hydra_twin import main
main()
"""


def install_package(tmp_path: Path) -> Path:
    """A pip-style install of the twin's `f5_tts` package; returns its site-packages."""
    site = tmp_path / "venv" / "lib" / "python3.11" / "site-packages"
    (site / "f5_tts" / "train").mkdir(parents=True)
    (site / "f5_tts" / "__init__.py").write_text("")
    (site / "f5_tts" / "train" / "__init__.py").write_text("")
    (site / "f5_tts" / "train" / "train.py").write_text(TRAIN_PY)
    return site


def package_root(site: Path) -> Path:
    """Where F5 puts `../..` of its package: `<venv>/lib/pythonX.Y`."""
    return site.parent


def command(*overrides: str) -> list[str]:
    return [sys.executable, "-m", "f5_tts.train.train", "--config-name", "tiny", *overrides]


def init(tmp_path: Path, site: Path, argv: list[str]) -> tuple[int, str, dict[str, object]]:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    out = tmp_path / "init.toml"
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "supervisor.cli",
            "init",
            "--adapter",
            "f5-tts",
            "--cwd",
            str(work),
            "-o",
            str(out),
            "--force",
            "--",
            *argv,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=scaled(180),
        check=False,
    )
    config = tomllib.loads(out.read_text()) if done.returncode == 0 else {}
    return done.returncode, done.stdout + done.stderr, config


@pytest.mark.slow
def test_init_asks_the_interpreter_where_the_package_root_is(tmp_path: Path) -> None:
    site = install_package(tmp_path)
    code, said, config = init(tmp_path, site, command("ckpts.save_dir=ckpts/tiny"))
    assert code == 0, said
    adapter = config["adapter"]
    assert isinstance(adapter, dict)
    assert Path(str(adapter["checkpoint_dir"])) == package_root(site).resolve() / "ckpts" / "tiny"
    # An absolute save_dir lands below the root too: pathlib folds ../..//srv/x.
    code, said, config = init(tmp_path, site, command("++ckpts.save_dir=/srv/x"))
    assert code == 0, said
    adapter = config["adapter"]
    assert isinstance(adapter, dict)
    assert Path(str(adapter["checkpoint_dir"])) == package_root(site).resolve() / "srv" / "x"


@pytest.mark.slow
def test_init_says_why_it_cannot_tell(tmp_path: Path) -> None:
    site = install_package(tmp_path)
    # No override, and no Hydra in this interpreter to read the config's default.
    (site / "f5_tts" / "configs").mkdir()
    (site / "f5_tts" / "configs" / "tiny.yaml").write_text("ckpts:\n  save_dir: ckpts/x\n")
    code, said, _ = init(tmp_path, site, command())
    assert code == 2
    assert "hydra is not installed" in said
    assert "--checkpoint-dir" in said
    code, said, _ = init(tmp_path, tmp_path / "nowhere", command("ckpts.save_dir=x"))
    assert code == 2
    assert "f5_tts is not installed for" in said


def supervised(tmp_path: Path, site: Path, overrides: list[str], **checkpoints: object) -> Path:
    return write_config(
        tmp_path,
        adapter="f5-tts",
        command=command("ckpts.save_dir=ckpts/tiny", "optim.epochs=2", *overrides),
        cwd=tmp_path,
        checkpoint_dir=package_root(site) / "ckpts" / "tiny",
        checkpoints=checkpoints,
        env={"PYTHONPATH": str(site)},
    )


def events(config: Path, kind: str) -> list[str]:
    return [e["message"] for e in status(config)["events"] if e["kind"] == kind]


@pytest.mark.slow
def test_the_checkpoints_below_the_package_root_are_verified_and_protected(tmp_path: Path) -> None:
    site = install_package(tmp_path)
    write_faults(package_root(site), [{"at": 6, "kind": "torn"}])  # SIGKILL mid-save
    config = supervised(tmp_path, site, ["ckpts.last_per_updates=2"])
    result = run_cli("run", "-c", str(config))
    assert result.returncode == 0, result.stdout[-3000:]
    data = status(config)
    assert data["state"] == "completed"
    assert data["last_verified_step"] == 8
    assert data["attempts"][0]["cause"] == "crash"
    final = torch.load(package_root(site) / "ckpts" / "tiny" / "model_last.pt", weights_only=True)
    assert final["update"] == 8


@pytest.mark.slow
def test_a_save_announced_that_never_lands_is_a_standing_problem(tmp_path: Path) -> None:
    site = install_package(tmp_path)
    # The old mistake: the directory taken relative to the cwd, where nothing is written.
    config = write_config(
        tmp_path,
        adapter="f5-tts",
        command=command(
            "ckpts.save_dir=ckpts/tiny", "optim.epochs=2", "twin.update_s=0.5", "ckpts.last_per_updates=1"
        ),
        cwd=tmp_path,
        checkpoint_dir=tmp_path / "ckpts" / "tiny",
        checkpoints={"save_landing_grace_s": 1.5},
        env={"PYTHONPATH": str(site)},
    )
    result = run_cli("run", "-c", str(config))
    assert result.returncode == 0, result.stdout[-3000:]
    (warning,) = events(config, "saves_not_landing")
    assert "Saved last checkpoint at update 1" in warning
    assert str(tmp_path / "ckpts" / "tiny") in warning
    assert warning in status(config)["problems"]
    shown = run_cli("status", "-c", str(config)).stdout
    assert "PROBLEM" in shown
    assert "nothing landed" in shown


@pytest.mark.slow
def test_saves_that_land_raise_no_problem(tmp_path: Path) -> None:
    site = install_package(tmp_path)
    config = supervised(
        tmp_path, site, ["ckpts.last_per_updates=1", "twin.update_s=0.3"], save_landing_grace_s=scaled(1.5)
    )
    assert run_cli("run", "-c", str(config)).returncode == 0
    assert events(config, "saves_not_landing") == []
    assert status(config)["problems"] == []


@pytest.mark.slow
def test_a_rewrite_caught_mid_save_is_read_again_never_rejected(tmp_path: Path) -> None:
    site = install_package(tmp_path)
    # Each model_last.pt save stalls after its truncating open and again half-way, each
    # stall 15x quiet_s: the watcher hands the file over empty, then half-written.
    # One epoch of 4 updates: the save at update 4 and the final one, both stalled.
    overrides = ["optim.epochs=1", "ckpts.last_per_updates=4", "twin.save_pause_s=3"]
    config = supervised(tmp_path, site, overrides, quiet_s=0.2)
    result = run_cli("run", "-c", str(config))
    assert result.returncode == 0, result.stdout[-3000:]
    assert "caught while being written" in result.stdout + result.stderr
    listed = [json.loads(x) for x in run_cli("checkpoints", "-c", str(config), "--json").stdout.splitlines()]
    assert [c for c in listed if not c["ok"]] == []
    assert any(c["ok"] and c["step"] == 4 for c in listed)
    assert events(config, "rejected") == []
    assert status(config)["state"] == "completed"


@pytest.mark.slow
def test_a_torn_model_last_at_exit_is_restored_from_its_verified_copy(tmp_path: Path) -> None:
    site = install_package(tmp_path)
    # update 8 is the last: its save and the final one are cut half-way; exit 0.
    write_faults(package_root(site), [{"at": 8, "kind": "torn_exit"}])
    # model_last.pt is rewritten every 2 updates of 0.3 s: quiet (0.2 s) long enough to be verified.
    config = supervised(tmp_path, site, ["ckpts.last_per_updates=2", "twin.update_s=0.3"])
    result = run_cli("run", "-c", str(config))
    assert result.returncode == 0, result.stdout[-3000:]
    final = torch.load(package_root(site) / "ckpts" / "tiny" / "model_last.pt", weights_only=True)
    assert final["update"] == 6  # the newest verified state, restored
    (settled,) = events(config, "final_state")
    assert "restore" in settled
    assert list((tmp_path / "state" / "quarantine").glob("*/model_last.pt"))  # the torn one, kept


@pytest.mark.slow
def test_the_crash_detail_names_the_error_not_hydras_hint(tmp_path: Path) -> None:
    site = install_package(tmp_path)
    write_faults(package_root(site), [{"at": 3, "kind": "exception"}])
    config = supervised(tmp_path, site, ["ckpts.last_per_updates=2"])
    assert run_cli("run", "-c", str(config)).returncode == 0
    first = status(config)["attempts"][0]
    assert first["cause"] == "crash"
    assert first["detail"] == "error: RuntimeError: (twin) simulated crash, e.g. a flaky data loader"


@pytest.mark.slow
def test_an_empty_model_last_left_by_a_kill_is_judged_before_the_relaunch(tmp_path: Path) -> None:
    site = install_package(tmp_path)
    # Killed right after the truncating open at update 6: model_last.pt is left empty. While
    # the trainer ran it had no verdict; with the trainer gone it is judged, moved aside, and
    # the verified copy of update 4 is put back, with no "still being written" on the way.
    write_faults(package_root(site), [{"at": 6, "kind": "torn_empty"}])
    config = supervised(tmp_path, site, ["ckpts.last_per_updates=2", "twin.update_s=0.3"])
    result = run_cli("run", "-c", str(config))
    assert result.returncode == 0, result.stdout[-3000:]
    data = status(config)
    assert [a["cause"] for a in data["attempts"]] == ["crash", "completed"]
    assert events(config, "prepare_failed") == []
    (moved,) = (tmp_path / "state" / "quarantine").glob("*/model_last.pt")
    assert moved.stat().st_size == 0
