"""`train-supervisor init`: a config a user can run, never over their own file."""

from __future__ import annotations

import tomllib
from pathlib import Path

from tests.twins import run_cli


def init(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    result = run_cli("init", "--cwd", str(tmp_path), "-o", str(tmp_path / "run.toml"), *args)
    return result.returncode, result.stdout, result.stderr


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


def test_the_checkpoint_dir_can_be_given(tmp_path: Path) -> None:
    code, _, err = init(
        tmp_path, "--adapter", "generic", "--checkpoint-dir", "ckpts", "--", "python", "train.py"
    )
    assert code == 0, err
    data = tomllib.loads((tmp_path / "run.toml").read_text())
    assert data["adapter"]["checkpoint_dir"] == "ckpts"
    check = run_cli("config", "check", "-c", str(tmp_path / "run.toml"))
    assert check.returncode == 0, check.stderr
