"""`train-supervisor config check`: validate a config and print it in full."""

from __future__ import annotations

from pathlib import Path

import click

from supervisor.cli.shared import CONFIG_OPTION, load_config


@click.group(name="config")
def config_group() -> None:
    """Work with config files."""


@config_group.command(name="check")
@CONFIG_OPTION
def config_check(config_path: Path) -> None:
    """Validate a config and print the effective config (defaults filled in, paths resolved)."""
    from supervisor import config as config_module

    config = load_config(config_path)
    click.echo(config_module.to_toml(config), nl=False)
