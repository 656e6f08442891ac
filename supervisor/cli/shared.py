"""What the commands share: the config option, the adapters' names as a lazy choice,
failing with an exit code, and loading the config with its errors as a usage error."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

if TYPE_CHECKING:
    from supervisor.config import Config

EXIT_USAGE = 2


class AdapterChoice(click.Choice):  # type: ignore[type-arg]
    """The adapters' names, found when first asked for, so that `--help` does not import them."""

    def __init__(self) -> None:
        super().__init__((), case_sensitive=True)

    @property
    def choices(self) -> tuple[str, ...]:
        import trainer_adapters

        return tuple(trainer_adapters.names())

    @choices.setter
    def choices(self, _value: Any) -> None:
        pass


CONFIG_OPTION = click.option(
    "-c",
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The run's TOML config file.",
)

ACCEPT_MODEL_CHANGE = click.option(
    "--accept-model-change",
    is_flag=True,
    help="The model's shape was changed on purpose: accept checkpoints whose keys or tensor shapes "
    "differ from the run's newest verified one (otherwise they are rejected).",
)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    click.echo(f"train-supervisor: {message}", err=True)
    sys.exit(code)


def load_config(
    path: Path, for_launch: bool = True, runs_as: int | None = None, acting: bool = False
) -> Config:
    from supervisor import config as config_module
    from supervisor.config import ConfigError

    try:
        return config_module.load(path, for_launch=for_launch, runs_as=runs_as, acting=acting)
    except ConfigError as exc:
        fail(str(exc))
