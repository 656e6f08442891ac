"""The `train-supervisor` command.

Exit codes: 0 training completed, or stopped on request; 1 internal error;
2 usage or config error (nothing was started); 3 gave up (too many attempts
without progress; the systemd unit names it in RestartPreventExitStatus=).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from supervisor import __version__

if TYPE_CHECKING:
    from supervisor.config import Config

# Every command imports what it needs when it runs: `--help` loads click and this module.

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


def _fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    click.echo(f"train-supervisor: {message}", err=True)
    sys.exit(code)


def _load(path: Path, for_launch: bool = True, runs_as: int | None = None, acting: bool = False) -> Config:
    from supervisor import config as config_module
    from supervisor.config import ConfigError

    try:
        return config_module.load(path, for_launch=for_launch, runs_as=runs_as, acting=acting)
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


ACCEPT_MODEL_CHANGE = click.option(
    "--accept-model-change",
    is_flag=True,
    help="The model's shape was changed on purpose: accept checkpoints whose keys or tensor shapes "
    "differ from the run's newest verified one (otherwise they are rejected).",
)


@main.command()
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

    from supervisor.checkpoints.pinned import DirectoryTaken
    from supervisor.daemon.loop import Daemon
    from supervisor.ledger import Ledger, LedgerDamaged, LedgerError
    from supervisor.outputs import logs
    from supervisor.process.gpu import GpuUnavailable
    from supervisor.process.lock import AlreadyRunning, RunLock

    config = _load(config_path)
    lock = RunLock(config.state_dir)
    try:
        lock.acquire()
    except AlreadyRunning as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot use state_dir {config.state_dir}: {exc.strerror or exc}")
    logs.configure()
    logs.bind(run=config.name)
    log = structlog.get_logger("supervisor")
    try:
        ledger = Ledger.open(config.state_dir, new_ledger=new_ledger)
    except LedgerDamaged as exc:
        _fail(str(exc))
    except LedgerError as exc:
        _fail(str(exc), 1)
    owner = ledger.run()
    if owner is not None and owner.config_path != config.path and owner.config_path.exists():
        # Two configs sharing one state_dir would share counters, attempts and logs.
        _fail(
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
        _fail(f"[gpu] probe: {exc}")
    log.info(  # (after the daemon: it knows the secrets to keep out of every line)
        "supervising",
        command=" ".join(config.run.command),
        cwd=str(config.cwd),
        state_dir=str(config.state_dir),
        trainer_log=str(config.trainer_log),
    )
    try:
        import asyncio

        code = asyncio.run(daemon.run())
    except DirectoryTaken as exc:
        ledger.close()
        lock.release()
        _fail(str(exc))
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
    """Show the run's state: phase, uptime, attempt, restarts by cause, last progress, last
    verified step, next backoff. Live from the running supervisor, else from its ledger."""
    from supervisor.cli.status import render, report
    from supervisor.ledger import LedgerError

    config = _load(config_path, for_launch=False)
    try:
        data = report(config)
    except LedgerError as exc:
        _fail(str(exc), 1)
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        render(data)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--adapter",
    "adapter_name",
    type=AdapterChoice(),
    help="Which trainer wrote the files (default: recognised from each file's name and directory).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per path per line.")
def verify(paths: tuple[Path, ...], adapter_name: str | None, as_json: bool) -> None:
    """Check that the trainer could resume from each checkpoint file.

    Container integrity (every record's CRC-32), a safe load (weights_only; a file that
    needs any other code to load is rejected), required keys, finite tensors, step
    consistency. Exit 0 when all are ok, 1 when any is rejected or unknown (the
    validator failed, or the file kept changing while it was read), 2 on usage errors.
    """
    import trainer_adapters
    from supervisor.cli.checkpoint_commands import verify_paths
    from supervisor.outputs import logs

    logs.configure(level=logging.WARNING, stream=sys.stderr)
    layouts = {}
    for path in paths:
        adapter = trainer_adapters.get(adapter_name) if adapter_name else trainer_adapters.detect(path)
        if adapter is None:
            candidates = [a.name for a in trainer_adapters.recognising(path)]
            looks = f" (it looks like {' or '.join(candidates)})" if candidates else ""
            _fail(
                f"cannot tell which trainer wrote {path}{looks}; pass --adapter NAME "
                f"(known: {', '.join(trainer_adapters.names())})"
            )
        layouts[path] = adapter
    import asyncio

    results = asyncio.run(verify_paths(layouts))
    for result in results:
        if as_json:
            click.echo(json.dumps(result))
        elif result["ok"]:
            click.echo(f"ok        {result['path']}  ({_counters(result)}, {result['seconds']:.2f}s)")
        else:
            click.echo(f"{result['verdict'].upper():<9} {result['path']}: {result['reason']}")
    sys.exit(0 if all(r["ok"] for r in results) else 1)


def _counters(result: dict[str, object]) -> str:
    """`step 2400, epoch 8; resumes by epoch`: what a verified file says, in its units."""
    parts = [f"{what} {result[what]}" for what in ("step", "epoch") if result.get(what) is not None]
    text = ", ".join(parts) or "no step"
    return f"{text}; resumes by epoch" if result.get("resume_unit") == "epoch" else text


@main.command()
@CONFIG_OPTION
@click.option("--json", "as_json", is_flag=True, help="One JSON object per checkpoint per line.")
def checkpoints(config_path: Path, as_json: bool) -> None:
    """List what the ledger knows about the run's checkpoints."""
    from supervisor.ledger import Ledger, LedgerError
    from supervisor.ledger.text import readable

    config = _load(config_path, for_launch=False)
    try:
        ledger = Ledger.open_readonly(config.state_dir)
        rows = ledger.verdicts() if ledger is not None else []
    except LedgerError as exc:
        _fail(str(exc), 1)
    for row in rows:
        data = {
            "path": readable(row.path),
            "step": row.step,
            "ok": row.ok,
            "verdict": "ok" if row.ok else "rejected",
            "reason": row.reason,
            "size": row.version.size,
            "checksum": row.checksum,
            "verified_at": datetime.fromtimestamp(row.verified_at).astimezone().isoformat(timespec="seconds"),
        }
        if as_json:
            click.echo(json.dumps(data))
        else:
            verdict = "ok" if row.ok else f"REJECTED: {row.reason}"
            click.echo(f"{data['verified_at']}  step {row.step!s:>8}  {data['path']}  {verdict}")
    if not rows and not as_json:
        click.echo("no checkpoint verified yet")


@main.command()
@CONFIG_OPTION
@click.option("--apply", "apply_plan", is_flag=True, help="Carry the plan out (launches nothing).")
@click.option("--json", "as_json", is_flag=True, help="The plan as one JSON object.")
@ACCEPT_MODEL_CHANGE
def plan(config_path: Path, apply_plan: bool, as_json: bool, accept_model_change: bool) -> None:
    """Show the resume plan: what the trainer will load, what is moved aside or restored.

    Unverified checkpoints are verified first. With --apply the run directory is prepared
    (nothing is launched), so another tool can start the trainer. Exit 0 when the
    trainer's own resume rule lands on the newest verified state, 1 when it would not.
    """
    from supervisor.cli.checkpoint_commands import plan_run
    from supervisor.ledger import LedgerError
    from supervisor.outputs import logs

    logs.configure(level=logging.WARNING, stream=sys.stderr)
    config = _load(config_path, for_launch=False, acting=True)
    if config.adapter.checkpoint_dir is None:
        _fail(f"config {config.path}: adapter.checkpoint_dir is not set: there is nothing to plan")
    from supervisor.checkpoints.pinned import DirectoryChanged, DirectoryTaken

    lock = None
    if apply_plan:
        from supervisor.process.lock import AlreadyRunning, RunLock

        lock = RunLock(config.state_dir)
        try:
            lock.acquire()
        except AlreadyRunning as exc:
            _fail(f"{exc}; it prepares the run directory itself before every launch")
    try:
        import asyncio

        result = asyncio.run(plan_run(config, apply=apply_plan, accept_model_change=accept_model_change))
    except (LedgerError, DirectoryTaken, DirectoryChanged) as exc:
        _fail(str(exc), EXIT_USAGE if isinstance(exc, DirectoryTaken) else 1)
    finally:
        if lock is not None:
            lock.release()
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(result["summary"])
        if result["problem"] and "REFUSED" not in result["summary"]:
            click.echo(f"REFUSED: {result['problem']}")
        for move in result["moves"]:
            click.echo(f"  move aside  {move['path']}: {move['reason']}")
        for restore in result["restores"]:
            click.echo(f"  restore     {restore['path']} (step {restore['step']}) from {restore['from']}")
        click.echo(_applied_line(apply_plan, result["applied"], result["ok"]))
    sys.exit(0 if result["ok"] else 1)


def _applied_line(asked: bool, applied: bool, ok: bool) -> str:
    if not asked:
        return "(dry run: nothing changed; --apply to carry it out)"
    if applied and ok:
        return "applied."
    if applied:
        return (
            "partly applied: some of it was carried out before it was refused (see the quarantine and "
            "'train-supervisor checkpoints'); do not start the trainer yet"
        )
    return "not applied: refused before anything was changed"


@main.group(name="config")
def config_group() -> None:
    """Work with config files."""


@config_group.command(name="check")
@CONFIG_OPTION
def config_check(config_path: Path) -> None:
    """Validate a config and print the effective config (defaults filled in, paths resolved)."""
    from supervisor import config as config_module

    config = _load(config_path)
    click.echo(config_module.to_toml(config), nl=False)


@main.command(context_settings={"ignore_unknown_options": True})
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
    from supervisor import config as config_module
    from supervisor.cli.init import InitError, draft, render
    from supervisor.config import ConfigError

    if output.exists() and not force:
        _fail(f"{output} exists; pass --force to overwrite it")
    if not output.absolute().parent.is_dir():
        _fail(f"cannot write {output}: {output.absolute().parent} is not a directory")
    try:
        d = draft(
            adapter_name=adapter_name,
            from_dir=from_dir,
            command=command,
            cwd=Path(os.path.abspath(cwd.expanduser())),
            checkpoint_dir=checkpoint_dir,
        )
    except InitError as exc:
        _fail(str(exc))
    with tempfile.TemporaryDirectory(dir=output.absolute().parent, prefix=".init-") as staging:
        staged = Path(staging) / output.name
        staged.write_text(render(d))
        try:
            config_module.load(staged, for_launch=False)  # what init writes must be a valid config
        except ConfigError as exc:
            _fail(f"internal error: the config drafted is not valid: {exc}", 1)
        staged.replace(output)
    click.echo(f"wrote {output} for {d.adapter.name}; checkpoints: {d.checkpoint_dir or '(none)'}")
    for warning in d.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"next: train-supervisor config check -c {output} && train-supervisor run -c {output}")


@main.command("install-service")
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
    # A system unit runs the config's owner's command as that owner (User=): theirs to trust.
    from supervisor.cli import service

    runs_as = None if user else service.runs_as(config_path)
    config = _load(config_path, runs_as=runs_as)
    try:
        installation = service.plan(config, user=user, unit_dir=unit_dir)
    except service.UnitError as exc:
        _fail(str(exc))
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
        _fail(f"cannot install the service: {detail}", 1)
    for line in done:
        click.echo(line)
    journal = "journalctl --user" if user else "journalctl"
    click.echo(f"{installation.instance}: `{journal} -u {installation.instance} -f` follows it")


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
