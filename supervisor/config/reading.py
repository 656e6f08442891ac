"""Reading a config: TOML, validation, resolving paths, the checks across sections, and one readable error block."""

from __future__ import annotations

import difflib
import os
import pwd
import shutil
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ValidationError,
)

import trainer_adapters
from supervisor.config.model import Config
from supervisor.config.run_place import RUN_NAME, absolute, config_path, run_name, state_dir_of
from supervisor.config.trust import others_can_write
from trainer_adapters.rules import arg_problems


class ConfigError(Exception):
    """A config that cannot be used. str() is the whole readable block."""

    def __init__(self, path: Path, problems: Sequence[str]) -> None:
        self.path = path
        self.problems = list(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        if len(self.problems) == 1:
            return f"config {self.path}: {self.problems[0]}"
        lines = "\n".join(f"  - {p}" for p in self.problems)
        return f"config {self.path}: {len(self.problems)} problems\n{lines}"


def load(
    path: str | os.PathLike[str],
    *,
    for_launch: bool = True,
    runs_as: int | None = None,
    acting: bool = False,
) -> Config:
    """Read, validate and resolve a config file; ConfigError on any problem.

    With `for_launch`, also check that run.cwd exists and the command can be found
    (`status` reads a run's ledger even when its trainer is gone), and that no user but
    root and `runs_as` (who will run the command; default: us) could have written it.
    `acting`: only that last check, for a command that acts on the config's word without
    launching (`plan` moves files and asks the trainer's interpreter for its packages)."""
    where = config_path(path)
    raw = _read_toml(where)
    try:
        config = _validate(where, raw)
    except ValidationError as exc:
        raise ConfigError(where, _describe(exc)) from None
    config = _resolve(config)
    problems = _check_adapter(config)
    if for_launch or acting:
        problems += _check_trusted(where, runs_as)
    if for_launch:
        problems += _check_paths(config) + _check_command(config) + _check_webhooks(config)
    if problems:
        raise ConfigError(where, problems)
    return config


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(path, ["file not found"])
    if not path.is_file():
        raise ConfigError(path, ["not a regular file"])
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, [f"TOML syntax error: {exc}"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, [f"cannot read: {exc}"]) from None


def _validate(path: Path, raw: dict[str, Any]) -> Config:
    """Validate everything, then report every problem at once."""
    data = dict(raw)
    problems = ["path: unknown key"] if "path" in data else []
    adapter_raw = data.get("adapter", {})
    adapter_keys: list[str] = []
    if isinstance(adapter_raw, Mapping):
        data["adapter"], adapter_problems, adapter_keys = _split_adapter_table(dict(adapter_raw))
        problems += adapter_problems
    try:
        config = Config.model_validate({**data, "path": path})
    except ValidationError as exc:
        raise ConfigError(path, problems + _describe(exc, adapter_keys=adapter_keys)) from None
    if problems:
        raise ConfigError(path, problems)
    return config


def _split_adapter_table(table: dict[str, Any]) -> tuple[dict[str, Any], list[str], list[str]]:
    """Move adapter-specific keys into `options`, validated by that adapter's model.
    Returns the table, its problems, and the keys the adapter accepts."""
    base: dict[str, Any] = {k: table.pop(k) for k in ("name", "checkpoint_dir") if k in table}
    name = base.get("name", "generic")
    if not isinstance(name, str):
        return {**base, **table}, [], []  # let pydantic report the wrong type
    try:
        adapter = trainer_adapters.get(name)
    except KeyError as exc:
        return base, [f"adapter.name: {exc.args[0]}"], []
    keys = ["name", "checkpoint_dir", *adapter.options.model_fields]
    missing = []
    if adapter.needs_checkpoint_dir and "checkpoint_dir" not in base:
        missing = [
            f"adapter.checkpoint_dir: required for {name} (where it writes checkpoints; see {adapter.docs})"
        ]
    try:
        options = adapter.options.model_validate(table)
    except ValidationError as exc:
        return base, missing + _describe(exc, prefix=("adapter",), adapter_keys=keys), keys
    return {**base, "options": options}, missing, keys


def _describe(
    exc: ValidationError, prefix: tuple[str | int, ...] = (), adapter_keys: list[str] | None = None
) -> list[str]:
    problems = []
    for err in exc.errors(include_url=False):
        loc = prefix + tuple(err["loc"])
        where = _dotted(loc)
        kind = err["type"]
        if kind == "extra_forbidden":
            problems.append(f"{where}: unknown key{_expected_keys(loc, adapter_keys or [])}")
        elif kind == "missing":
            problems.append(f"{where}: required key is missing")
        else:
            message = str(err["msg"]).removeprefix("Value error, ")
            # A webhook's values may be secrets (a token in its URL): never echoed.
            got = "" if loc[:1] == ("notify",) else f" (got {err['input']!r})"
            problems.append(f"{where}: {message}{got}")
    return problems


def _expected_keys(loc: tuple[str | int, ...], adapter_keys: list[str]) -> str:
    """' (did you mean x?)' or ' (expected one of: ...)' for an unknown key at `loc`."""
    if loc[:1] == ("adapter",):
        known = adapter_keys
    else:
        model: type[BaseModel] = Config
        for part in loc[:-1]:
            field = model.model_fields.get(str(part))
            annotation = field.annotation if field is not None else None
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                return ""
            model = annotation
        known = [k for k in model.model_fields if k != "path"]
    if not known:
        return ""
    close = difflib.get_close_matches(str(loc[-1]), known, n=1)
    return f" (did you mean {close[0]}?)" if close else f" (expected one of: {', '.join(known)})"


def _dotted(loc: tuple[str | int, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _resolve(config: Config) -> Config:
    base = config.path.parent
    run = config.run
    name = run_name(run.name, config.path)
    if not RUN_NAME.match(name):
        raise ConfigError(
            config.path, [f"run.name: the file name {name!r} is not a usable run name; set run.name"]
        )
    cwd = absolute(run.cwd, base) if run.cwd is not None else base
    state_dir = state_dir_of(run.state_dir, config.path, name)
    checkpoint_dir = config.adapter.checkpoint_dir
    adapter = config.adapter.model_copy(
        update={"checkpoint_dir": absolute(checkpoint_dir, cwd) if checkpoint_dir is not None else None}
    )
    run = run.model_copy(update={"name": name, "cwd": cwd, "state_dir": state_dir})
    oom, drift = config.oom, config.drift
    if oom.memory_events is not None:
        oom = oom.model_copy(update={"memory_events": absolute(oom.memory_events, base)})
    if drift.files is not None:
        drift = drift.model_copy(update={"files": [absolute(f, cwd) for f in drift.files]})
    return config.model_copy(update={"run": run, "adapter": adapter, "oom": oom, "drift": drift})


def _check_adapter(config: Config) -> list[str]:
    """What the adapter says of its options for this checkpoint directory."""
    adapter = trainer_adapters.get(config.adapter.name)
    directory = config.adapter.checkpoint_dir
    if adapter.check_dir is None or directory is None:
        return []
    problem = adapter.check_dir(config.adapter.options, directory)
    return [problem] if problem else []


def _check_trusted(path: Path, runs_as: int | None) -> list[str]:
    """Its command runs as `runs_as` (as root, under a system unit without User=): a
    config that another user could have written is not theirs to run."""
    why = others_can_write(path, runs_as)
    if why is None:
        return []
    user = _user(os.geteuid() if runs_as is None else runs_as)
    return [
        f"(file): refusing a config another user can change: {why}; its command would run as "
        f"{user}. Make it and its directories writable by {user} (and root) only, e.g. chmod go-w"
    ]


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _check_command(config: Config) -> list[str]:
    """Flags of the trainer's command that make supervising it unsafe or useless."""
    adapter = trainer_adapters.get(config.adapter.name)
    return [f"run.command: {problem}" for problem in arg_problems(adapter.args, config.run.command)]


def _check_webhooks(config: Config) -> list[str]:
    problems = []
    for n, hook in enumerate(config.notify.webhooks):
        for key, name in (("url_env", hook.url_env), ("token_env", hook.token_env)):
            if name is not None and not os.environ.get(name):
                problems.append(f"notify.webhooks[{n}].{key}: the environment variable {name} is not set")
        url = os.environ.get(hook.url_env or "", "")
        if url and not url.startswith(("http://", "https://")):
            problems.append(
                f"notify.webhooks[{n}].url_env: ${hook.url_env} must start with http:// or https://"
            )
    return problems


def _check_paths(config: Config) -> list[str]:
    if not config.cwd.exists():
        return [f"run.cwd: directory does not exist: {config.cwd}"]
    if not config.cwd.is_dir():
        return [f"run.cwd: not a directory: {config.cwd}"]
    program = config.run.command[0]
    if "/" in program:
        resolved = absolute(Path(program), config.cwd)
        if not (resolved.is_file() and os.access(resolved, os.X_OK)):
            return [f"run.command[0]: not an executable file: {resolved}"]
        return []
    search_path = config.run.env.get("PATH", os.environ.get("PATH", os.defpath))
    if shutil.which(program, path=search_path) is None:
        return [f"run.command[0]: {program!r} was not found on PATH"]
    return []
