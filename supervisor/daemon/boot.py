"""Starting over from the ledger: the core's state as the last supervisor left it, and what is left of an attempt it lost track of."""

from __future__ import annotations

import signal
from dataclasses import dataclass, replace

import structlog

from supervisor.core import Boot, Phase, State
from supervisor.ledger import AttemptRow, RunRow
from supervisor.process.procfs import boot_id, proc_identity, split_identity
from supervisor.process.sessions import clear_session, marked_processes, signal_session

log = structlog.get_logger("supervisor")


def restored(
    saved: RunRow | None, unfinished: AttemptRow | None, *, seed: int, reset_counters: bool, again: bool
) -> tuple[State, Boot]:
    """The core's state from the saved run, and how it boots: after a completed or
    finishing run (unless run `again`), or with an attempt left unfinished."""
    state = State(seed=seed)
    if saved is not None:
        state = replace(
            state,
            attempt=saved.attempt,
            backoff_level=saved.backoff_level,
            without_progress=saved.without_progress,
            last_cause=saved.last_cause,
            last_exit=saved.last_exit,
            best_step=saved.best_step,
            carry=saved.carry,
        )
        if reset_counters:
            # (the OOM ladders stay: what ran out of memory will again)
            carry = replace(state.carry, nan_rollbacks=0, silent_resets=0)
            state = replace(state, backoff_level=0, without_progress=0, carry=carry)
        elif saved.without_progress:
            log.info(
                "counters carried over from the previous supervisor",
                attempts_without_progress=saved.without_progress,
                previous_state=saved.phase.value,
            )
    if unfinished is None:
        ended = saved.phase if saved is not None and not again else None
        return state, Boot(completed=ended is Phase.COMPLETED, finishing=ended is Phase.FINISHING)
    if unfinished.n != state.attempt:  # the ledger died between two writes
        state = replace(state, attempt=unfinished.n)
    made_progress = saved is not None and (saved.stable or saved.progressed)
    return state, Boot(unfinished=True, unfinished_stable=made_progress)


@dataclass(frozen=True)
class Leftovers:
    """What may be left of an unfinished attempt: its session (only where its leader is
    the very process recorded: a pid can be reused) and every process with its marker
    started since the leader."""

    sid: int | None
    marker: str
    since: int  # clock ticks; 0 without a recorded identity: every process is a candidate

    @classmethod
    def of(cls, attempt: AttemptRow) -> Leftovers | None:
        """None where nothing can be left: the machine rebooted since."""
        since = 0
        if attempt.identity is not None:
            booted, _, since = split_identity(attempt.identity)
            if booted != boot_id():
                return None
        leader_alive = attempt.pid is not None and proc_identity(attempt.pid) == attempt.identity
        return cls(attempt.pid if leader_alive else None, attempt.marker, since)

    def marked(self) -> list[int]:
        return marked_processes(self.marker, self.since)

    def kill_now(self) -> None:
        signal_session(self.sid, signal.SIGKILL, self.marked())

    async def clear(self, stop_signal: signal.Signals, grace_s: float) -> int:
        """`stop_signal`, SIGKILL after `grace_s`; how many processes there were."""
        return await clear_session(self.sid, stop_signal, grace_s, self.marked)
