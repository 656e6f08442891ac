"""One attempt from the daemon's side: the trainer's command and environment, and its end as the core's `Exited` event."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Mapping, Sequence

import structlog

from supervisor.checkpoints.on_disk import validated_globals
from supervisor.config import Config
from supervisor.core import Exited, ExitStatus
from supervisor.core.health import Remedy, with_remedies
from supervisor.process.interpreter import shim_env
from supervisor.process.trainer import OutputTail, Trainer, trainer_env
from supervisor.signals.crash_detail import crash_detail
from supervisor.signals.oom_evidence import OomEvidence
from trainer_adapters.base import Layout

log = structlog.get_logger("supervisor")


def launch_command(
    config: Config,
    layout: Layout,
    vitals_env: Mapping[str, str],
    remedies: Sequence[Remedy],
    marker: str,
    withheld: Sequence[str],
) -> tuple[list[str], dict[str, str]]:
    """The command (with the remedies' overrides) and the trainer's whole environment."""
    command, overrides = with_remedies(
        config.run.command, {**config.run.env, **vitals_env, **_shim_env(config, layout)}, remedies
    )
    return command, trainer_env(os.environ, overrides, marker, withheld=withheld)


def _shim_env(config: Config, layout: Layout) -> dict[str, str]:
    """[checkpoints] trainer_safe_globals: the sitecustomize that allows, in the
    trainer's process, exactly the globals its checkpoints were verified with."""
    allowed = validated_globals(layout)
    if not config.checkpoints.trainer_safe_globals or not allowed:
        return {}
    return shim_env(allowed, config.run.env.get("PYTHONPATH", os.environ.get("PYTHONPATH", "")))


async def watch_exit(
    attempt: int,
    trainer: Trainer,
    stop_signal: signal.Signals,
    grace_s: float,
    tail: OutputTail,
    oom_evidence: OomEvidence | None,
) -> Exited:
    """The trainer's end, whatever happens while waiting for it: the exit must reach the
    core, or supervision stalls."""
    try:
        status = await trainer.wait(stop_signal, grace_s)
    except Exception as exc:
        log.exception("error while waiting for the trainer to end; killing it")
        trainer.kill()
        returncode = await asyncio.to_thread(trainer.popen.wait)  # never block the loop
        status, detail = ExitStatus.from_returncode(returncode), f"supervisor error: {exc}"
    else:
        detail = crash_detail(tail.lines)
    return Exited(
        attempt,
        status,
        detail,
        at=trainer.exited_at,
        before_stop=trainer.exited_before_stop,
        oom_killed=await asyncio.to_thread(_oom_killed, status, trainer, oom_evidence),
    )


def _oom_killed(status: ExitStatus, trainer: Trainer, evidence: OomEvidence | None) -> bool:
    """The kernel's OOM killer took a process of this attempt (its cgroup's count rose,
    or the kernel log names the trainer). Blocking reads: run in a thread."""
    if status.code == 0 or evidence is None:
        return False
    try:
        return evidence.report([trainer.pid]).oom_killed
    except Exception:  # evidence only: the exit must reach the core whatever happens
        log.exception("could not read the OOM evidence")
        return False
