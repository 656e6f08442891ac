"""`locate`, the model-free reading of a config's run name and state directory that
`status` uses, finds exactly what the full load resolves, or declines where the load
would fail (the caller then loads it in full and shows the problem)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.config import ConfigError, RunPlace, load, locate

ABSENT = object()  # the key is not in the file
NAMES = st.one_of(
    st.just(ABSENT),
    st.sampled_from(["ljs", "a.b-c_d", "x" * 64, "x" * 65, "", "-bad", "has space", "ünï", "a/b", "abc\n"]),
    st.integers(),
    st.booleans(),
)
STATE_DIRS = st.one_of(
    st.just(ABSENT),
    st.sampled_from(["state", "../elsewhere/state", "/var/tmp/abs", "~/st", "a/./b/../c", "", "."]),
    st.integers(),
    st.lists(st.just("x"), max_size=1),
)
LIMITS = st.one_of(st.just(ABSENT), st.integers(-2, 9), st.booleans(), st.just(5.0), st.just("5"))
STEMS = st.sampled_from(["run", "my-model.v2", ".hidden", "two words", "x" * 70, "ends\n"])
ENVIRONMENTS = st.sampled_from(
    [
        {},
        {"STATE_DIRECTORY": "/var/lib/train-supervisor"},
        {"STATE_DIRECTORY": "/a:/b"},
        {"XDG_STATE_HOME": "/xdg"},
    ]
)


def toml_value(value: object) -> str:
    return json.dumps(value) if not isinstance(value, bool) else str(value).lower()


def config_text(name: object, state_dir: object, limit: object, restart_table: bool) -> str:
    lines = ["[run]", 'command = ["python", "train.py"]']
    if name is not ABSENT:
        lines.append(f"name = {toml_value(name)}")
    if state_dir is not ABSENT:
        lines.append(f"state_dir = {toml_value(state_dir)}")
    if restart_table or limit is not ABSENT:
        lines.append("[restart]")
    if limit is not ABSENT:
        lines.append(f"max_attempts_without_progress = {toml_value(limit)}")
    return "\n".join(lines) + "\n"


def fully_loaded(path: Path) -> RunPlace | None:
    try:
        return RunPlace.of(load(path, for_launch=False))
    except ConfigError:
        return None


@settings(max_examples=300, deadline=None)
@given(NAMES, STATE_DIRS, LIMITS, st.booleans(), STEMS, ENVIRONMENTS)
def test_locate_finds_what_the_full_load_resolves_or_declines_where_it_fails(
    name: object, state_dir: object, limit: object, restart_table: bool, stem: str, env: dict[str, str]
) -> None:
    clean = {k: v for k, v in os.environ.items() if k not in ("STATE_DIRECTORY", "XDG_STATE_HOME")}
    with tempfile.TemporaryDirectory() as work, mock.patch.dict(os.environ, {**clean, **env}, clear=True):
        path = Path(work) / f"{stem}.toml"
        path.write_text(config_text(name, state_dir, limit, restart_table))
        assert locate(path) == fully_loaded(path)


def test_a_relative_config_path_is_found_from_the_current_directory(tmp_path: Path) -> None:
    (tmp_path / "run.toml").write_text(config_text("ljs", "state", ABSENT, False))
    found = subprocess.run(
        [sys.executable, "-c", "from supervisor.config import locate; print(locate('run.toml'))"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"state_dir=PosixPath('{tmp_path / 'state'}')" in found


def test_what_locate_declines_the_full_load_names(tmp_path: Path) -> None:
    for text, problem in [
        ("[run\n", "TOML syntax error"),
        ('[run]\ncommand = ["x"]\nname = 3\n', "run.name"),
        (
            '[run]\ncommand = ["x"]\n[restart]\nmax_attempts_without_progress = 0\n',
            "max_attempts_without_progress",
        ),
    ]:
        path = tmp_path / "run.toml"
        path.write_text(text)
        assert locate(path) is None
        result = subprocess.run(
            [sys.executable, "-m", "supervisor.cli", "status", "-c", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 2, result.stdout
        assert problem in result.stderr
    assert locate(tmp_path / "missing.toml") is None
    assert locate(tmp_path) is None  # a directory


def test_status_reads_the_run_of_a_config_broken_elsewhere(tmp_path: Path) -> None:
    """`status` shows the run's state even when another section no longer validates
    (`config check` says what is wrong with it)."""
    path = tmp_path / "run.toml"
    path.write_text(
        config_text("ljs", str(tmp_path / "state"), 3, False) + "[checkpoints]\nno_such_key = 1\n"
    )
    assert locate(path) == RunPlace("ljs", path, tmp_path / "state", 3)
    result = subprocess.run(
        [sys.executable, "-m", "supervisor.cli", "status", "--json", "-c", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(result.stdout)["state"] == "not_started"


def test_a_name_ending_in_a_newline_is_no_run_name(tmp_path: Path) -> None:
    """`$` in a pattern also matches before a final newline: the state directory's name
    would have ended in one."""
    path = tmp_path / "run.toml"
    path.write_text(config_text("abc\n", ABSENT, ABSENT, False))
    assert locate(path) is None
    assert fully_loaded(path) is None
