"""`train-supervisor demo`: supervise the bundled CPU trainer that crashes on purpose."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".demo"),
    show_default=True,
    help="Where the demo's run directory and state go (emptied first).",
)
def demo(directory: Path) -> None:
    """Supervise a small bundled CPU trainer that crashes on purpose, then show the account."""
    from supervisor_demo import run_demo

    sys.exit(run_demo(directory))
