"""`train-supervisor init`: a config a user can run, never over their own file."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from tests.support.twins import run_cli


def init(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    result = run_cli("init", "--cwd", str(tmp_path), "-o", str(tmp_path / "run.toml"), *args)
    return result.returncode, result.stdout, result.stderr


@pytest.mark.slow
def test_generic_with_a_command_writes_a_valid_config(tmp_path: Path) -> None:
    code, out, err = init(tmp_path, "--adapter", "generic", "--", "python", "train.py", "--lr", "3e-4")
    assert code == 0, err
    assert out.startswith(f"wrote {tmp_path / 'run.toml'} for generic")
    data = tomllib.loads((tmp_path / "run.toml").read_text())
    assert data["run"]["command"] == ["python", "train.py", "--lr", "3e-4"]
    assert data["run"]["cwd"] == str(tmp_path)
    assert data["adapter"] == {"name": "generic"}
    check = run_cli("config", "check", "-c", str(tmp_path / "run.toml"))
    assert check.returncode == 0, check.stderr


def test_options_are_written_commented_with_their_descriptions(tmp_path: Path) -> None:
    code, _, err = init(tmp_path, "--adapter", "generic", "--", "python", "train.py")
    assert code == 0, err
    text = (tmp_path / "run.toml").read_text()
    assert "# pattern = (not set)" in text
    assert "# Checkpoint file names, with {step} where the step goes" in text


@pytest.mark.slow
def test_an_existing_file_is_never_overwritten_without_force(tmp_path: Path) -> None:
    (tmp_path / "run.toml").write_text("# mine\n")
    code, _, err = init(tmp_path, "--adapter", "generic", "--", "python", "train.py")
    assert code == 2
    assert err.strip() == f"train-supervisor: {tmp_path / 'run.toml'} exists; pass --force to overwrite it"
    assert (tmp_path / "run.toml").read_text() == "# mine\n"
    code, _, err = init(tmp_path, "--force", "--adapter", "generic", "--", "python", "train.py")
    assert code == 0, err
    assert "[adapter]" in (tmp_path / "run.toml").read_text()


def test_without_an_adapter_or_a_directory_it_says_what_is_missing(tmp_path: Path) -> None:
    code, _, err = init(tmp_path, "--", "python", "train.py")
    assert code == 2
    assert "--adapter NAME, or --from-dir DIR" in err
    assert not (tmp_path / "run.toml").exists()


@pytest.mark.slow
def test_a_directory_without_known_checkpoints_is_refused(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "notes.txt").write_text("x")
    code, _, err = init(tmp_path, "--from-dir", "runs", "--", "python", "train.py")
    assert code == 2
    assert "no checkpoint of a known trainer" in err
    missing_code, _, missing = init(tmp_path, "--from-dir", "nowhere", "--", "python", "train.py")
    assert missing_code == 2
    assert "not a directory" in missing
    assert not list(tmp_path.glob("*.toml"))


@pytest.mark.slow
def test_the_checkpoint_dir_can_be_given(tmp_path: Path) -> None:
    code, _, err = init(
        tmp_path, "--adapter", "generic", "--checkpoint-dir", "ckpts", "--", "python", "train.py"
    )
    assert code == 0, err
    data = tomllib.loads((tmp_path / "run.toml").read_text())
    assert data["adapter"]["checkpoint_dir"] == "ckpts"
    check = run_cli("config", "check", "-c", str(tmp_path / "run.toml"))
    assert check.returncode == 0, check.stderr


def test_options_the_command_tells_are_written_uncommented(tmp_path: Path) -> None:
    command = ["accelerate", "launch", "train_v2.py", "--run-name", "svc", "--train-cfm", "--train-ar"]
    code, out, err = init(tmp_path, "--adapter", "seed-vc", "--", *command)
    assert code == 0, err
    assert "checkpoints: runs/svc" in out
    data = tomllib.loads((tmp_path / "run.toml").read_text())
    assert data["adapter"] == {
        "name": "seed-vc",
        "checkpoint_dir": "runs/svc",
        "version": 2,
        "train_cfm": True,
        "train_ar": True,
    }


def test_the_checkpoint_dir_is_read_from_the_command(tmp_path: Path) -> None:
    code, _, err = init(
        tmp_path, "--adapter", "vits", "--", "python", "train.py", "-c", "c.json", "-m", "ljs"
    )
    assert code == 0, err
    assert tomllib.loads((tmp_path / "run.toml").read_text())["adapter"]["checkpoint_dir"] == "logs/ljs"


def test_an_adapter_whose_directory_the_command_does_not_tell_asks_for_it(tmp_path: Path) -> None:
    code, _, err = init(tmp_path, "--adapter", "gpt-sovits-s1", "--", "python", "s1_train.py")
    assert code == 2
    assert "pass --checkpoint-dir DIR (see docs/trainers/gpt-sovits-s1.md)" in err


@pytest.mark.slow
def test_unsafe_flags_are_written_but_warned_about(tmp_path: Path) -> None:
    command = ["python", "core.py", "train", "--model-name", "voice", "--cleanup"]
    code, _, err = init(tmp_path, "--adapter", "applio", "--", *command)
    assert code == 0
    assert "warning: the command: " in err
    check = run_cli("config", "check", "-c", str(tmp_path / "run.toml"))
    assert check.returncode == 2
    assert "run.command: " in check.stderr


def test_from_dir_recognises_the_trainer_and_uses_the_directory(tmp_path: Path) -> None:
    run = tmp_path / "logs" / "voice"
    run.mkdir(parents=True)
    for name in ("G_2333333.pth", "D_2333333.pth", "voice_10e_200s.pth", "config.json"):
        (run / name).write_bytes(b"x")
    (run / "model_info.json").write_text("{}")
    code, out, err = init(tmp_path, "--from-dir", "logs/voice")
    assert code == 0, err
    assert out.startswith(f"wrote {tmp_path / 'run.toml'} for applio; checkpoints: logs/voice")
    assert "replace it with your command" in err
    text = (tmp_path / "run.toml").read_text()
    assert "# EDIT: the example command from the trainer's README" in text


def test_from_dir_refuses_a_directory_two_trainers_could_have_written(tmp_path: Path) -> None:
    run = tmp_path / "logs" / "mixed"
    run.mkdir(parents=True)
    (run / "G_100.pth").write_bytes(b"x")  # VITS's name, and no Applio files beside it
    (run / "G_2333333.pth").write_bytes(b"x")  # Applio's "save only latest" sentinel
    code, _, err = init(tmp_path, "--from-dir", "logs/mixed", "--", "python", "train.py")
    assert code == 2
    assert "look like applio and vits checkpoints; pass --adapter NAME" in err
    assert not (tmp_path / "run.toml").exists()
