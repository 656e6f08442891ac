"""`train-supervisor status`: the run's state, as a table or one JSON object."""

from __future__ import annotations

from pathlib import Path

import click

from supervisor.cli.shared import CONFIG_OPTION, fail, load_config


@click.command()
@CONFIG_OPTION
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for scripts.")
def status(config_path: Path, as_json: bool) -> None:
    """Show the run's state: phase, uptime, attempt, restarts by cause, last progress, last
    verified step, next backoff. Live from the running supervisor, else from its ledger."""
    import json

    from supervisor.cli.status import render, report
    from supervisor.config.run_place import RunPlace, locate
    from supervisor.ledger import LedgerError

    # The run's name and state_dir, read without the model; a config where these are
    # not plainly valid is loaded in full, which names the problem.
    place = locate(config_path) or RunPlace.of(load_config(config_path, for_launch=False))
    try:
        data = report(place)
    except LedgerError as exc:
        fail(str(exc), 1)
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        render(data)
