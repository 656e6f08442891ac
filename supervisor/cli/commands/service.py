"""`train-supervisor install-service`: install a run as a systemd service (or show how)."""

from __future__ import annotations

from pathlib import Path

import click

from supervisor.cli.shared import CONFIG_OPTION, fail, load_config


@click.command("install-service")
@CONFIG_OPTION
@click.option("--user", is_flag=True, help="A user unit (systemctl --user), for a box without root.")
@click.option("--dry-run", is_flag=True, help="Print what would be written and run; change nothing.")
@click.option(
    "--unit-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write the unit files here instead, and enable nothing (packaging, staging).",
)
def install_service(config_path: Path, user: bool, dry_run: bool, unit_dir: Path | None) -> None:
    """Install this run as a systemd service: the unit template, a drop-in naming this
    config and this installation's Python, then daemon-reload and enable --now."""
    import subprocess

    # A system unit runs the config's owner's command as that owner (User=): theirs to trust.
    from supervisor.cli import service

    runs_as = None if user else service.runs_as(config_path)
    config = load_config(config_path, runs_as=runs_as)
    try:
        installation = service.plan(config, user=user, unit_dir=unit_dir)
    except service.UnitError as exc:
        fail(str(exc))
    if dry_run:
        click.echo(f"# {installation.template}\n{installation.template_text}")
        click.echo(f"# {installation.drop_in}\n{installation.drop_in_text}")
        for command in installation.commands if unit_dir is None else []:
            click.echo("$ " + " ".join(command))
        return
    try:
        done = service.install(installation, enable=unit_dir is None)
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = exc.stderr.strip() if isinstance(exc, subprocess.CalledProcessError) else str(exc)
        fail(f"cannot install the service: {detail}", 1)
    for line in done:
        click.echo(line)
    journal = "journalctl --user" if user else "journalctl"
    click.echo(f"{installation.instance}: `{journal} -u {installation.instance} -f` follows it")
