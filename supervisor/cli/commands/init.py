"""`train-supervisor init`: write a commented config for a trainer, checked before it lands."""

from __future__ import annotations

import os
from pathlib import Path

import click

from supervisor.cli.shared import AdapterChoice, fail


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option(
    "--adapter",
    "adapter_name",
    type=AdapterChoice(),
    help="Which trainer the command runs.",
)
@click.option(
    "--from-dir",
    type=click.Path(path_type=Path),
    help="An existing run directory: its checkpoints say which trainer it is.",
)
@click.option(
    "--checkpoint-dir",
    help="Where the trainer writes checkpoints, relative to --cwd (default: from the command or --from-dir).",
)
@click.option(
    "--cwd",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    help="The trainer's working directory (default: here).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("train-supervisor.toml"),
    show_default=True,
)
@click.option("--force", is_flag=True, help="Overwrite the output file if it exists.")
def init(
    command: tuple[str, ...],
    adapter_name: str | None,
    from_dir: Path | None,
    checkpoint_dir: str | None,
    cwd: Path,
    output: Path,
    force: bool,
) -> None:
    """Write a commented config for a trainer.

    \b
      train-supervisor init --adapter vits -- python train.py -c configs/ljs_base.json -m ljs_base
      train-supervisor init --from-dir logs/myvoice -- python core.py train --model-name myvoice ...
    """
    import tempfile

    from supervisor import config as config_module
    from supervisor.cli.init import InitError, draft, render
    from supervisor.config import ConfigError

    if output.exists() and not force:
        fail(f"{output} exists; pass --force to overwrite it")
    if not output.absolute().parent.is_dir():
        fail(f"cannot write {output}: {output.absolute().parent} is not a directory")
    try:
        d = draft(
            adapter_name=adapter_name,
            from_dir=from_dir,
            command=command,
            cwd=Path(os.path.abspath(cwd.expanduser())),
            checkpoint_dir=checkpoint_dir,
        )
    except InitError as exc:
        fail(str(exc))
    with tempfile.TemporaryDirectory(dir=output.absolute().parent, prefix=".init-") as staging:
        staged = Path(staging) / output.name
        staged.write_text(render(d))
        try:
            config_module.load(staged, for_launch=False)  # what init writes must be a valid config
        except ConfigError as exc:
            fail(f"internal error: the config drafted is not valid: {exc}", 1)
        staged.replace(output)
    click.echo(f"wrote {output} for {d.adapter.name}; checkpoints: {d.checkpoint_dir or '(none)'}")
    for warning in d.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"next: train-supervisor config check -c {output} && train-supervisor run -c {output}")
