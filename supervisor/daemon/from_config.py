"""What the config makes of the daemon's parts: the core's policy, the webhooks, and the names of the supervisor's own secrets."""

from __future__ import annotations

import os
from collections.abc import Sequence

import trainer_adapters
from supervisor.config import Config, RemedySection, nan_tolerance
from supervisor.core import Policy
from supervisor.core.backoff import Backoff
from supervisor.core.health import Remedy
from supervisor.outputs.webhooks import Webhook, url_from
from supervisor.signals.output_reader import PROGRESSING


def policy_for(config: Config) -> Policy:
    restart, heartbeat = config.restart, config.heartbeat
    adapter = trainer_adapters.get(config.adapter.name)
    reads_progress = adapter.metrics is not None or any(r.said in PROGRESSING for r in adapter.lines)
    return Policy(
        backoff=Backoff(
            initial_s=restart.backoff_initial_s,
            max_s=restart.backoff_max_s,
            factor=restart.backoff_factor,
            jitter=restart.jitter,
        ),
        stable_after_s=restart.stable_after_s,
        max_attempts_without_progress=restart.max_attempts_without_progress,
        stop_signal=config.stop.signal,
        stop_grace_s=config.stop.grace_s,
        exit_codes_trusted=adapter.exit_codes_trusted,
        progress_from_checkpoints=config.adapter.checkpoint_dir is not None and not adapter.steps_restart,
        hang_timeout_s=None if heartbeat.mode == "off" else heartbeat.timeout_s,
        startup_timeout_s=heartbeat.effective_startup_timeout_s,
        watch_from_launch=heartbeat.mode == "on" or reads_progress,
        learn_factor=heartbeat.learn_factor,
        learn_min_s=heartbeat.learn_min_s,
        nan_tolerance=nan_tolerance(config),
        max_nan_rollbacks=config.nan.max_rollbacks,
        nan_remedy=config.nan.remedy.remedy("nan remedy") if config.nan.remedy is not None else None,
        positions_comparable=not adapter.steps_restart,
        reset_epoch_offset=adapter.first_epoch_after_resume,
        unit=adapter.position_unit,
        oom_cuda_remedies=_ladder(config.oom.cuda_remedies, "oom-cuda"),
        oom_host_remedies=_ladder(config.oom.host_remedies, "oom-host"),
        checkpoint_dir=str(config.adapter.checkpoint_dir or ""),
        save_landing_grace_s=config.checkpoints.save_landing_grace_s,
    )


def secret_env_names(config: Config) -> list[str]:
    """The environment variables that hold the supervisor's own secrets."""
    return [name for hook in config.notify.webhooks for name in (hook.url_env, hook.token_env) if name]


def webhooks_from(config: Config) -> list[Webhook]:
    hooks = []
    for section in config.notify.webhooks:
        url = url_from(section.url, section.url_env, os.environ)
        if url is None:
            continue  # (config check names the unset variable)
        token = os.environ.get(section.token_env) if section.token_env else None
        events = frozenset(section.events)
        hooks.append(Webhook(url, section.format, events, section.min_interval_s, section.timeout_s, token))
    return hooks


def _ladder(rungs: Sequence[RemedySection], kind: str) -> tuple[Remedy, ...]:
    return tuple(rung.remedy(f"{kind} remedy {n}") for n, rung in enumerate(rungs, 1))
