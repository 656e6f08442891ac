"""`train-supervisor init`: a commented config for one trainer, from an adapter name and
the trainer's command, or from an existing run directory."""

from __future__ import annotations

import json
import os
import shlex
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import trainer_adapters
from supervisor.process.interpreter import InterpreterError, ask, trainer_python
from trainer_adapters.base import TrainerAdapter
from trainer_adapters.rules import arg_problems


class InitError(Exception):
    """Why no config can be written (one line)."""


@dataclass(frozen=True)
class Draft:
    adapter: TrainerAdapter
    command: list[str]
    cwd: Path
    checkpoint_dir: str | None
    found_how: str  # how checkpoint_dir was found, for the comment beside it
    command_is_example: bool = False
    options: dict[str, Any] = field(default_factory=dict)  # read from the command

    @property
    def warnings(self) -> list[str]:
        found = [f"the command: {p}" for p in arg_problems(self.adapter.args, self.command)]
        if self.command_is_example:
            found.append("run.command is the trainer's README example: replace it with your command")
        return found


def detect_adapter(directory: Path) -> TrainerAdapter:
    """The one adapter whose trainer wrote the checkpoints in `directory`."""
    if not directory.is_dir():
        raise InitError(f"not a directory: {directory}")
    votes: Counter[str] = Counter()
    for path in sorted(directory.iterdir()):
        if path.is_file():
            votes.update(a.name for a in trainer_adapters.recognising(path))
    if not votes:
        raise InitError(f"no checkpoint of a known trainer in {directory}; pass --adapter NAME")
    if len(votes) > 1:
        kinds = " and ".join(sorted(votes))
        raise InitError(f"the files in {directory} look like {kinds} checkpoints; pass --adapter NAME")
    return trainer_adapters.get(next(iter(votes)))


def draft(
    *,
    adapter_name: str | None,
    from_dir: Path | None,
    command: Sequence[str],
    cwd: Path,
    checkpoint_dir: str | None,
) -> Draft:
    if adapter_name is None and from_dir is None:
        raise InitError("say which trainer: --adapter NAME, or --from-dir DIR (an existing run directory)")
    adapter = trainer_adapters.get(adapter_name) if adapter_name else detect_adapter(_under(from_dir, cwd))
    argv, is_example = list(command), False
    if not argv:
        if from_dir is None or adapter.launch is None:
            raise InitError(
                "give the trainer's command after --, e.g. init --adapter vits -- python train.py ..."
            )
        argv, is_example = shlex.split(adapter.launch.example), True
    how = "given"
    if checkpoint_dir is None and from_dir is not None:
        checkpoint_dir, how = _relative(_under(from_dir, cwd), cwd), "the run directory given"
    if checkpoint_dir is None and adapter.launch is not None and adapter.launch.checkpoint_dir_probe:
        checkpoint_dir, how = _asked(adapter, adapter.launch.checkpoint_dir_probe, argv, cwd, is_example)
    if checkpoint_dir is None and adapter.launch is not None and adapter.launch.checkpoint_dir is not None:
        checkpoint_dir, how = adapter.launch.checkpoint_dir(argv), "derived from the command"
    if checkpoint_dir is None and adapter.name != "generic":
        raise InitError(
            f"cannot tell where {adapter.name} writes checkpoints from this command; pass --checkpoint-dir DIR"
            + (f" (see {adapter.docs})" if adapter.docs else "")
        )
    options = adapter.launch.options(argv) if adapter.launch and adapter.launch.options else {}
    return Draft(adapter, argv, cwd, checkpoint_dir, how, is_example, options)


def _asked(
    adapter: TrainerAdapter, probe: str, argv: Sequence[str], cwd: Path, is_example: bool
) -> tuple[str | None, str]:
    """The directory as the trainer's own interpreter places it (below its installed
    package); for the README example, which is no command of the user's, the argv rule."""
    python = trainer_python(argv, cwd, os.environ)
    if is_example:
        return None, ""  # the README's command names no interpreter of the user's
    if python is None:
        raise InitError(
            f"{adapter.name} writes checkpoints below its installed package, and the Python that runs "
            f"{argv[0]!r} cannot be told, to ask it where that is; pass --checkpoint-dir DIR"
        )
    try:
        answer = ask(python, probe, argv, cwd, os.environ)
    except InterpreterError as exc:
        raise InitError(
            f"cannot ask where {adapter.name} writes checkpoints: {exc}; pass --checkpoint-dir DIR"
        ) from None
    if not isinstance(answer, dict) or not isinstance(answer.get("path"), str):
        why = answer.get("error") if isinstance(answer, dict) else None
        raise InitError(
            f"cannot tell where {adapter.name} writes checkpoints ({why or 'no answer'}); pass --checkpoint-dir DIR"
        )
    where = _relative(Path(answer["path"]), cwd)
    return where, f"where {python} puts it: below the package root {answer.get('package_root', '?')}"


def render(d: Draft, *, today: date | None = None) -> str:
    a = d.adapter
    when = (today or date.today()).isoformat()
    lines = [
        f"# train-supervisor config for {a.name}: {a.summary}.",
        f"# Written by `train-supervisor init` on {when}. Check it with:",
        "#   train-supervisor config check -c THIS_FILE",
        "# Every key not written here has its default: see config.example.toml.",
    ]
    if a.docs:
        lines.append(f"# About this trainer under the supervisor: {a.docs}")
    lines += ["", "[run]"]
    if d.command_is_example:
        lines.append("# EDIT: the example command from the trainer's README; put yours here.")
    lines += ["# The trainer's command line, as a list (no shell).", f"command = {_toml(d.command)}"]
    if a.launch is not None and a.launch.cwd not in ("", "."):
        lines.append(f"# The trainer must run from {a.launch.cwd}.")
    lines += ["# The trainer's working directory.", f"cwd = {_toml(str(d.cwd))}"]
    lines += ["", "[adapter]", f"name = {_toml(a.name)}"]
    if d.checkpoint_dir is not None:
        lines += [
            f"# Where the trainer writes checkpoints, relative to run.cwd ({d.found_how}).",
            f"checkpoint_dir = {_toml(d.checkpoint_dir)}",
        ]
    else:
        lines += [
            "# Without checkpoint_dir the process is supervised but no checkpoint is verified.",
            '# checkpoint_dir = "checkpoints"',
        ]
    lines += _options(a, d.options)
    lines += [
        "",
        "[restart]",
        "# Give up (exit 3) after this many consecutive attempts without progress (see README).",
        "max_attempts_without_progress = 5",
        "",
    ]
    return "\n".join(lines)


def _options(adapter: TrainerAdapter, from_command: dict[str, Any]) -> list[str]:
    fields = adapter.options.model_fields
    if not fields:
        return []
    lines = [f"# Options of the {adapter.name} adapter (commented: the default):"]
    for key, info in fields.items():
        if info.description:
            lines += [f"# {line.strip()}" for line in info.description.splitlines() if line.strip()]
        if key in from_command:
            lines.append(f"{key} = {_toml(from_command[key])}   # from the command")
            continue
        default: Any = info.get_default(call_default_factory=True)
        lines.append(f"# {key} = {'(not set)' if default is None else _toml(default)}")
    return lines


def _toml(value: Any) -> str:
    if isinstance(value, tuple):
        value = list(value)
    return json.dumps(value, ensure_ascii=False)  # JSON strings, lists and numbers are TOML


def _under(path: Path | None, cwd: Path) -> Path:
    assert path is not None
    return path if path.is_absolute() else cwd / path


def _relative(path: Path, cwd: Path) -> str:
    try:
        return str(path.resolve().relative_to(cwd.resolve()))
    except ValueError:
        return str(path.resolve())
