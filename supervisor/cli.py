"""The `train-supervisor` command.

Exit codes: 0 training completed, or stopped on request; 1 internal error;
2 usage or config error (nothing was started); 3 gave up (too many attempts
without progress; the systemd unit names it in RestartPreventExitStatus=).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import NoReturn

import click
import structlog

from supervisor import __version__, logs
from supervisor import config as config_module
from supervisor.config import Config, ConfigError
from supervisor.ledger import LedgerError

EXIT_USAGE = 2

CONFIG_OPTION = click.option(
    "-c",
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The run's TOML config file.",
)


def _fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    click.echo(f"train-supervisor: {message}", err=True)
    sys.exit(code)


def _load(path: Path, for_launch: bool = True) -> Config:
    try:
        return config_module.load(path, for_launch=for_launch)
    except ConfigError as exc:
        _fail(str(exc))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="train-supervisor")
def main() -> None:
    """Keep a training run going unattended.

    Launches the trainer, notices when it dies, relaunches it with exponential
    backoff, gives up (exit 3) after too many attempts without progress, and keeps
    a ledger of everything in the run's state_dir.
    """


@main.command()
@CONFIG_OPTION
@click.option(
    "--reset-counters",
    is_flag=True,
    help="Forget the backoff level and the attempts-without-progress count carried over "
    "from earlier supervisors (e.g. after fixing what made it give up).",
)
def run(config_path: Path, reset_counters: bool) -> None:
    """Run the trainer in the foreground and keep it running.

    SIGINT, SIGTERM or SIGHUP stop the trainer with grace and exit 0; a second
    signal kills it at once.
    """
    from supervisor.daemon import Daemon, trainer_log_path
    from supervisor.ledger import Ledger
    from supervisor.lock import AlreadyRunning, RunLock

    config = _load(config_path)
    lock = RunLock(config.state_dir)
    try:
        lock.acquire()
    except AlreadyRunning as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot use state_dir {config.state_dir}: {exc.strerror or exc}")
    logs.configure()
    logs.bind(run=config.name, attempt=0)
    log = structlog.get_logger("supervisor")
    try:
        ledger = Ledger.open(config.state_dir)
    except LedgerError as exc:
        _fail(str(exc), 1)
    owner = ledger.run()
    if owner is not None and owner.config_path != config.path and owner.config_path.exists():
        # Two configs sharing one state_dir would share counters, attempts and logs.
        _fail(
            f"state_dir {config.state_dir} belongs to the run configured in {owner.config_path}; "
            "give this run its own run.name or run.state_dir"
        )
    log.info(
        "supervising",
        command=" ".join(config.run.command),
        cwd=str(config.cwd),
        state_dir=str(config.state_dir),
        trainer_log=str(trainer_log_path(config)),
    )
    try:
        code = asyncio.run(Daemon(config, ledger, reset_counters=reset_counters).run())
    except Exception:
        log.exception("internal error; the supervisor exits")
        code = 1
    finally:
        ledger.close()
        lock.release()
    sys.exit(code)


@main.command()
@CONFIG_OPTION
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for scripts.")
def status(config_path: Path, as_json: bool) -> None:
    """Show the run's state from its ledger: state, attempt, restarts, last exit, next backoff."""
    from supervisor.status import render, report

    config = _load(config_path, for_launch=False)
    try:
        data = report(config)
    except LedgerError as exc:
        _fail(str(exc), 1)
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        render(data)


@main.group(name="config")
def config_group() -> None:
    """Work with config files."""


@config_group.command(name="check")
@CONFIG_OPTION
def config_check(config_path: Path) -> None:
    """Validate a config and print the effective config (defaults filled in, paths resolved)."""
    config = _load(config_path)
    click.echo(config_module.to_toml(config), nl=False)


@main.command()
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


if __name__ == "__main__":
    main()
