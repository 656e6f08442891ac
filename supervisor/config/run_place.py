"""Where a config's run lives (its name and state directory), found without pydantic:
the rules the full load resolves these by, and a reader for `status`, which needs
nothing else of the config and starts several times faster without the model.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from supervisor.config.model import Config

RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")  # \Z: "$" would let a newline end it
DEFAULT_MAX_ATTEMPTS_WITHOUT_PROGRESS = 5


def config_path(path: str | os.PathLike[str]) -> Path:
    return Path(path).expanduser().absolute()


def absolute(path: Path, base: Path) -> Path:
    """Absolute and without `..` (as the watcher reports paths), symlinks left as they are."""
    return Path(os.path.abspath(base / path.expanduser()))


def run_name(name: str | None, path: Path) -> str:
    """`run.name`, else the config file's name without its suffix."""
    return name if name is not None else path.stem


def default_state_dir(name: str) -> Path:
    """systemd's $STATE_DIRECTORY when set, else $XDG_STATE_HOME (~/.local/state)."""
    systemd_dir = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if systemd_dir:
        return Path(systemd_dir) / name
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "train-supervisor" / name


def state_dir_of(state_dir: Path | None, path: Path, name: str) -> Path:
    """`run.state_dir` (relative to the config's folder), else the default for `name`."""
    return absolute(state_dir, path.parent) if state_dir is not None else default_state_dir(name)


def trainer_log_in(state_dir: Path) -> Path:
    """Where the trainer's stdout and stderr go (rotated beside it)."""
    return state_dir / "logs" / "trainer.log"


@dataclass(frozen=True)
class RunPlace:
    """What `status` needs of a config."""

    name: str
    path: Path
    state_dir: Path
    max_attempts_without_progress: int

    @property
    def trainer_log(self) -> Path:
        return trainer_log_in(self.state_dir)

    @classmethod
    def of(cls, config: Config) -> RunPlace:
        return cls(config.name, config.path, config.state_dir, config.restart.max_attempts_without_progress)


def locate(path: str | os.PathLike[str]) -> RunPlace | None:
    """The run a config names, read without validating the rest of it. None wherever
    these keys are not plainly valid (a missing or unreadable file, a TOML error, a wrong
    type): the caller then loads the config in full, which names the problem."""
    where = config_path(path)
    if not where.is_file():
        return None  # missing, a directory, a pipe: the full load says which
    try:
        with where.open("rb") as fh:
            raw = tomllib.load(fh)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    run = raw.get("run")
    restart = raw.get("restart", {})
    if not isinstance(run, dict) or not isinstance(restart, dict):
        return None
    name = _text(run, "name")
    state_dir = _text(run, "state_dir")
    limit = restart.get("max_attempts_without_progress", DEFAULT_MAX_ATTEMPTS_WITHOUT_PROGRESS)
    if name is False or state_dir is False or type(limit) is not int or limit < 1:
        return None
    resolved = run_name(name, where)
    if not RUN_NAME.match(resolved):
        return None  # an invalid name ("" included), or a file name that is not one
    directory = state_dir_of(Path(state_dir) if state_dir is not None else None, where, resolved)
    return RunPlace(resolved, where, directory, limit)


def _text(table: dict[str, Any], key: str) -> str | Literal[False] | None:
    """The string at `key`; None when absent; False when it is anything else."""
    if key not in table:
        return None
    value = table[key]
    return value if isinstance(value, str) else False
