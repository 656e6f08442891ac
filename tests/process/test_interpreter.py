"""Asking the trainer's own Python, as the trainer runs: its cwd and its environment."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from supervisor.process.interpreter import InterpreterError, ask, trainer_python, versions


def fake_distribution(site: Path, name: str, version: str) -> None:
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def test_versions_read_a_relative_pythonpath_from_the_trainers_cwd(tmp_path: Path) -> None:
    trainer_cwd = tmp_path / "trainer"
    fake_distribution(trainer_cwd / "site", "pytorch-lightning", "9.9.0")
    env = {**os.environ, "PYTHONPATH": "site"}  # relative: what it means in the trainer's cwd
    assert (versions(sys.executable, trainer_cwd, env) or {})["pytorch-lightning"] == "9.9.0"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert (versions(sys.executable, elsewhere, env) or {})["pytorch-lightning"] != "9.9.0"


def test_ask_passes_the_argv_and_says_why_it_could_not_tell(tmp_path: Path) -> None:
    echo = "import json, sys; print(json.dumps({'argv': json.loads(sys.argv[1])}))"
    assert ask(sys.executable, echo, ["train.py", "--x", "é"], tmp_path, os.environ) == {
        "argv": ["train.py", "--x", "é"]
    }
    with pytest.raises(InterpreterError, match=r"could not tell \(exit 1\): ValueError: no"):
        ask(sys.executable, "raise ValueError('no')", [], tmp_path, os.environ)
    with pytest.raises(InterpreterError, match="cannot run"):
        ask(str(tmp_path / "missing-python"), "pass", [], tmp_path, os.environ)


def test_the_trainers_python_from_a_shebang(tmp_path: Path) -> None:
    script = tmp_path / "accelerate"
    script.write_text(f"#!{sys.executable}\nprint('launch')\n")
    script.chmod(0o755)
    assert trainer_python([str(script), "launch", "train.py"], tmp_path, os.environ) == sys.executable
    assert (
        trainer_python(["python3", "train.py"], tmp_path, {"PATH": os.path.dirname(sys.executable)})
        is not None
    )
