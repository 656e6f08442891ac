"""The checkpoint commands: `verify` files, list the `checkpoints` the ledger knows, and
show (or apply) the resume `plan`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from supervisor.cli.shared import (
    ACCEPT_MODEL_CHANGE,
    CONFIG_OPTION,
    EXIT_USAGE,
    AdapterChoice,
    fail,
    load_config,
)

if TYPE_CHECKING:
    from trainer_adapters.base import TrainerAdapter


@click.command()
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
    import asyncio
    import json
    import logging

    import trainer_adapters
    from supervisor.outputs import logs

    logs.configure(level=logging.WARNING, stream=sys.stderr)
    layouts = {}
    for path in paths:
        adapter = trainer_adapters.get(adapter_name) if adapter_name else trainer_adapters.detect(path)
        if adapter is None:
            candidates = [a.name for a in trainer_adapters.recognising(path)]
            looks = f" (it looks like {' or '.join(candidates)})" if candidates else ""
            fail(
                f"cannot tell which trainer wrote {path}{looks}; pass --adapter NAME "
                f"(known: {', '.join(trainer_adapters.names())})"
            )
        layouts[path] = adapter
    results = asyncio.run(_verified(layouts))
    for result in results:
        if as_json:
            click.echo(json.dumps(result))
        elif result["ok"]:
            click.echo(f"ok        {result['path']}  ({_counters(result)}, {result['seconds']:.2f}s)")
        else:
            click.echo(f"{result['verdict'].upper():<9} {result['path']}: {result['reason']}")
    sys.exit(0 if all(r["ok"] for r in results) else 1)


async def _verified(layouts: dict[Path, TrainerAdapter]) -> list[dict[str, Any]]:
    """Start the validator worker first, when there is a file to judge: its torch import,
    the floor of verify's time, goes on while the modules of the checks are imported here."""
    import contextlib

    from supervisor.validator.client import ValidatorClient

    client = ValidatorClient()
    try:
        if any(_to_judge(path, adapter) for path, adapter in layouts.items()):
            with contextlib.suppress(OSError):  # a worker that cannot start: each verdict says so
                await client.start()
        from supervisor.cli.checkpoint_commands import verify_paths

        return await verify_paths(layouts, client)
    finally:
        await client.close()


def _to_judge(path: Path, adapter: TrainerAdapter) -> bool:
    """A regular file that the trainer's layout takes for a resume checkpoint: one the
    worker will be asked about (the others are rejected without it)."""
    import stat

    try:
        regular = stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return False
    return regular and adapter.layout(adapter.options()).parse(path.absolute()) is not None


def _counters(result: dict[str, object]) -> str:
    """`step 2400, epoch 8; resumes by epoch`: what a verified file says, in its units."""
    parts = [f"{what} {result[what]}" for what in ("step", "epoch") if result.get(what) is not None]
    text = ", ".join(parts) or "no step"
    return f"{text}; resumes by epoch" if result.get("resume_unit") == "epoch" else text


@click.command()
@CONFIG_OPTION
@click.option("--json", "as_json", is_flag=True, help="One JSON object per checkpoint per line.")
def checkpoints(config_path: Path, as_json: bool) -> None:
    """List what the ledger knows about the run's checkpoints."""
    import json
    from datetime import datetime

    from supervisor.ledger import Ledger, LedgerError
    from supervisor.ledger.text import readable

    config = load_config(config_path, for_launch=False)
    try:
        ledger = Ledger.open_readonly(config.state_dir)
        rows = ledger.verdicts() if ledger is not None else []
    except LedgerError as exc:
        fail(str(exc), 1)
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


@click.command()
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
    import asyncio
    import json
    import logging

    from supervisor.checkpoints.pinned import DirectoryChanged, DirectoryTaken
    from supervisor.cli.checkpoint_commands import plan_run
    from supervisor.ledger import LedgerError
    from supervisor.outputs import logs

    logs.configure(level=logging.WARNING, stream=sys.stderr)
    config = load_config(config_path, for_launch=False, acting=True)
    if config.adapter.checkpoint_dir is None:
        fail(f"config {config.path}: adapter.checkpoint_dir is not set: there is nothing to plan")
    lock = None
    if apply_plan:
        from supervisor.process.lock import AlreadyRunning, RunLock

        lock = RunLock(config.state_dir)
        try:
            lock.acquire()
        except AlreadyRunning as exc:
            fail(f"{exc}; it prepares the run directory itself before every launch")
    try:
        result = asyncio.run(plan_run(config, apply=apply_plan, accept_model_change=accept_model_change))
    except (LedgerError, DirectoryTaken, DirectoryChanged) as exc:
        fail(str(exc), EXIT_USAGE if isinstance(exc, DirectoryTaken) else 1)
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
