"""`train-supervisor run`: supervise the trainer in the foreground until it completes,
is stopped, or the supervisor gives up."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from supervisor.cli.shared import ACCEPT_MODEL_CHANGE, CONFIG_OPTION, EXIT_USAGE, fail, load_config

if TYPE_CHECKING:
    from supervisor.daemon.loop import Daemon


@click.command()
@CONFIG_OPTION
@click.option(
    "--reset-counters",
    is_flag=True,
    help="Forget the backoff level, the attempts-without-progress count, the NaN rollbacks and "
    "the silent resets carried over from earlier supervisors (e.g. after fixing what made it "
    "give up); the OOM remedy ladders stay.",
)
@click.option(
    "--again",
    is_flag=True,
    help="Launch the trainer even though this run completed before (e.g. after raising its epochs).",
)
@click.option(
    "--accept-config-change",
    is_flag=True,
    help="The trainer's config files were edited on purpose: launch even with [drift] policy = 'refuse'.",
)
@ACCEPT_MODEL_CHANGE
@click.option(
    "--new-ledger",
    is_flag=True,
    help="The ledger is lost or damaged: start a new one (the old file is kept beside it, renamed).",
)
def run(
    config_path: Path,
    reset_counters: bool,
    again: bool,
    accept_config_change: bool,
    accept_model_change: bool,
    new_ledger: bool,
) -> None:
    """Run the trainer in the foreground and keep it running.

    SIGINT, SIGTERM or SIGHUP stop the trainer with grace and exit 0; a second
    signal kills it at once.
    """
    import structlog

    from supervisor.daemon.loop import Daemon
    from supervisor.ledger import Ledger, LedgerDamaged, LedgerError
    from supervisor.outputs import logs
    from supervisor.process.gpu import GpuUnavailable
    from supervisor.process.lock import AlreadyRunning, RunLock

    config = load_config(config_path)
    lock = RunLock(config.state_dir)
    try:
        lock.acquire()
    except AlreadyRunning as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot use state_dir {config.state_dir}: {exc.strerror or exc}")
    logs.configure()
    logs.bind(run=config.name)
    log = structlog.get_logger("supervisor")
    try:
        ledger = Ledger.open(config.state_dir, new_ledger=new_ledger)
    except LedgerDamaged as exc:
        fail(str(exc))
    except LedgerError as exc:
        fail(str(exc), 1)
    owner = ledger.run()
    if owner is not None and owner.config_path != config.path and owner.config_path.exists():
        # Two configs sharing one state_dir would share counters, attempts and logs.
        fail(
            f"state_dir {config.state_dir} belongs to the run configured in {owner.config_path}; "
            "give this run its own run.name or run.state_dir"
        )
    try:
        daemon = Daemon(
            config,
            ledger,
            reset_counters=reset_counters,
            again=again,
            accept_config_change=accept_config_change,
            accept_model_change=accept_model_change,
        )
    except GpuUnavailable as exc:
        ledger.close()
        fail(f"[gpu] probe: {exc}")
    log.info(  # (after the daemon: it knows the secrets to keep out of every line)
        "supervising",
        command=" ".join(config.run.command),
        cwd=str(config.cwd),
        state_dir=str(config.state_dir),
        trainer_log=str(config.trainer_log),
    )
    try:
        import asyncio

        code = asyncio.run(_supervised(daemon))
    except Exception:  # (in asyncio's own ending: the daemon's errors are handled there)
        log.exception("internal error; the supervisor exits")
        code = 1
    finally:
        ledger.close()
        lock.release()
    sys.exit(code)


async def _supervised(daemon: Daemon) -> int:
    """The daemon's run; once its teardown is over, the process has a bounded time to exit
    (a thread left stuck in a dead filesystem must not keep it)."""
    import structlog

    from supervisor.checkpoints.pinned import DirectoryTaken
    from supervisor.daemon.overrun import EXIT_GRACE_S, exit_within

    log = structlog.get_logger("supervisor")
    try:
        code = await daemon.run()
    except DirectoryTaken as exc:  # said and coded here: the backstop may end the process next
        click.echo(f"train-supervisor: {exc}", err=True)
        code = EXIT_USAGE
    except Exception:
        log.exception("internal error; the supervisor exits")
        code = 1
    exit_within(EXIT_GRACE_S, code)
    return code
