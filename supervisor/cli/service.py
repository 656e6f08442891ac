"""`train-supervisor install-service`: the systemd units, and a drop-in per run.

The unit templates are the package's `supervisor/cli/units/` files, read as package data.
A run is installed as an instance of the template plus a drop-in that names its config,
the exact interpreter of this installation, and a stop timeout above its grace period.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from supervisor.config import Config

SYSTEM_UNIT = "train-supervisor@.service"
USER_UNIT = "train-supervisor-user@.service"
SYSTEM_DIR = Path("/etc/systemd/system")
DROP_IN = "train-supervisor.conf"
STOP_MARGIN_S = 60  # TimeoutStopSec above [stop] grace_s: the trainer's grace, then our own exit
USER_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_.-]{0,31}")  # what systemd's strict user-name check allows

UNITS = resources.files("supervisor.cli") / "units"  # package data: the files are the units
SYSTEM_TEXT = (UNITS / SYSTEM_UNIT).read_text()
USER_TEXT = (UNITS / USER_UNIT).read_text()


@dataclass(frozen=True)
class Installation:
    unit_dir: Path
    template: Path
    template_text: str
    drop_in: Path
    drop_in_text: str
    instance: str
    commands: list[list[str]]


def plan(config: Config, *, user: bool, unit_dir: Path | None = None) -> Installation:
    """What installing this run's service writes and runs (nothing is done here)."""
    directory = unit_dir or (_user_unit_dir() if user else SYSTEM_DIR)
    name = USER_UNIT if user else SYSTEM_UNIT
    instance = name.replace("@.", f"@{config.name}.")
    systemctl = ["systemctl", "--user"] if user else ["systemctl"]
    return Installation(
        unit_dir=directory,
        template=directory / name,
        template_text=USER_TEXT if user else SYSTEM_TEXT,
        drop_in=directory / f"{instance}.d" / DROP_IN,
        drop_in_text=drop_in(config, user=user),
        instance=instance,
        commands=[[*systemctl, "daemon-reload"], [*systemctl, "enable", "--now", instance]],
    )


class UnitError(ValueError):
    """Something that cannot be written into a unit file safely."""


def drop_in(config: Config, *, user: bool) -> str:
    """The per-run drop-in. Every value from outside (paths, the owner's name) is quoted
    and escaped by systemd's rules, so none can end a line, close a quote, or be read as
    a specifier (`%`) or a variable (`$`); a control character is refused outright."""
    config_path = _plain(str(config.path), "the config's path")
    python = _program(_plain(sys.executable, "this Python's path"))
    lines = [
        "# Written by `train-supervisor install-service`.",
        "[Service]",
        f"Environment={_quoted(f'TRAIN_SUPERVISOR_CONFIG={config_path}')}",
        "ExecStart=",
        f"ExecStart={python} -m supervisor.cli run -c ${{TRAIN_SUPERVISOR_CONFIG}}",
        f"TimeoutStopSec={int(config.stop.grace_s) + STOP_MARGIN_S}",
    ]
    owner = _owner(config.path)
    if not user and owner not in (None, "root"):
        # The run's files are its owner's: never train as root.
        lines.append(f"User={_user_name(owner)}")
    return "\n".join(lines) + "\n"


def _plain(text: str, what: str) -> str:
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise UnitError(
            f"{what} holds a control character (a newline?): {text!r}; refusing to write it into a unit"
        )
    return text


def install(installation: Installation, *, enable: bool) -> list[str]:
    """Write the files (and run systemctl when `enable`); returns what was done."""
    done = []
    for path, text in (
        (installation.template, installation.template_text),
        (installation.drop_in, installation.drop_in_text),
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
        done.append(f"wrote {path}")
    if enable:
        if shutil.which("systemctl") is None:
            raise OSError("systemctl not found: the files are written; enable the unit where systemd runs")
        for command in installation.commands:
            subprocess.run(command, check=True, capture_output=True, text=True, timeout=120)
            done.append("ran " + " ".join(command))
    return done


def _user_unit_dir() -> Path:
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config_home) / "systemd" / "user"


def _user_name(name: str) -> str:
    """A user name as User= takes it: unquoted (systemd keeps quotes as part of the
    name), so it must be one systemd accepts as it is."""
    if not USER_NAME.fullmatch(name):
        raise UnitError(
            f"the config's owner {name!r} is not a user name systemd accepts in User=; "
            "chown the config to the user the run should train as"
        )
    return name


def runs_as(config_path: Path) -> int | None:
    """Whom a system unit runs the config's command as: its owner (User=), root if root
    owns it; None where that cannot be told."""
    try:
        return os.stat(config_path).st_uid
    except OSError:
        return None


def _owner(path: Path) -> str | None:
    try:
        return pwd.getpwuid(path.stat().st_uid).pw_name
    except (OSError, KeyError):
        return None


def _quoted(text: str) -> str:
    """`text` as one double-quoted value systemd reads back exactly (Environment=):
    `\\` and `"` escaped, `%` (specifiers) doubled; no variable is expanded there."""
    text = text.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return f'"{text}"'


def _program(path: str) -> str:
    """An ExecStart= program, quoted: `%` doubled (`$` is not expanded in the program's
    own name); systemd refuses a `"` or `\\` there outright, so such a path is refused."""
    if any(c in path for c in '"\\'):
        raise UnitError(
            f"this Python's path holds a quote or a backslash, which systemd refuses in a program name: {path}"
        )
    return '"' + path.replace("%", "%%") + '"'
