"""The small state steps several decisions share: the next attempt, a final phase, giving up, ending an attempt."""

from __future__ import annotations

from dataclasses import replace

from supervisor.core.actions import Action, Decision, Finish, Note, Prepare, StopTrainer
from supervisor.core.health import Watch
from supervisor.core.phases import EXIT_GAVE_UP, EXIT_OK, Cause, Phase
from supervisor.core.state import Policy, State


def _next_attempt(state: State, actions: list[Action]) -> Decision:
    # -> PREPARING
    attempt = state.attempt + 1
    state = replace(
        state,
        phase=Phase.PREPARING,
        attempt=attempt,
        started_at=None,
        stable=False,
        progressed=False,
        relaunch_at=None,
        fatal=None,
        completion_seen=False,
        watch=Watch(),
        ending=None,
        ending_detail="",
    )
    return state, [*actions, Prepare(attempt, state.carry.nan_below)]


def _end(state: State, cause: Cause, why: str, policy: Policy) -> Decision:
    # RUNNING -> ENDING: stop the sick attempt (with grace), then relaunch or give up
    state = replace(state, phase=Phase.ENDING, ending=cause, ending_detail=why)
    note = Note(cause.value, f"attempt {state.attempt}: {why}; stopping it", "warning")
    return state, [note, StopTrainer(policy.stop_signal, policy.stop_grace_s)]


def _give_up(state: State, actions: list[Action], policy: Policy, detail: str = "") -> Decision:
    # RUNNING | STARTING | RECLAIMING -> GAVE_UP
    last = f"; last: {detail}" if detail else ""
    message = (
        f"giving up: {state.without_progress} consecutive attempts without progress "
        f"(max_attempts_without_progress = {policy.max_attempts_without_progress}){last}"
    )
    return _final(state, Phase.GAVE_UP, actions, Note("gave_up", message, "error"))


def _final(state: State, phase: Phase, actions: list[Action], note: Note) -> Decision:
    code = EXIT_GAVE_UP if phase is Phase.GAVE_UP else EXIT_OK
    state = replace(state, phase=phase, exit_code=code, relaunch_at=None)
    return state, [*actions, note, Finish(code)]
