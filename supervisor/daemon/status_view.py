"""The run as the user sees it while the supervisor runs: the live snapshot (status, metrics) and systemd's one-line STATUS."""

from __future__ import annotations

import os

from supervisor.core import Policy, State, next_delay_s
from supervisor.outputs.status_socket import Snapshot


def snapshot_of(
    name: str,
    state: State,
    policy: Policy,
    now: float,
    *,
    trainer_pid: int | None,
    started_at: float,
    uptime_s: float,
    restarts_by_cause: dict[str, int],
) -> Snapshot:
    """Exact ages, from the loop's clock (`now`)."""
    last = state.watch.last_progress_at
    return Snapshot(
        run=name,
        phase=state.phase.value,
        attempt=state.attempt,
        supervisor_pid=os.getpid(),
        started_at=started_at,
        uptime_s=uptime_s,
        trainer_pid=trainer_pid,
        last_progress_age_s=round(now - last, 3) if last is not None else None,
        last_progress_sign=state.watch.last_sign or None,
        best_step=state.best_step,
        next_relaunch_in_s=max(0.0, state.relaunch_at - now) if state.relaunch_at is not None else None,
        next_backoff_s=next_delay_s(state, policy),
        attempts_without_progress=state.without_progress,
        last_cause=state.last_cause.value if state.last_cause is not None else None,
        restarts_by_cause=restarts_by_cause,
    )


def status_line(state: State) -> str:
    verified = (
        f"last verified step {state.best_step}" if state.best_step is not None else "nothing verified yet"
    )
    cause = f", last end: {state.last_cause.value}" if state.last_cause is not None else ""
    return f"{state.phase.value}: attempt {state.attempt}, {verified}{cause}"
