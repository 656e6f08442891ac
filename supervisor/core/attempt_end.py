"""How an attempt ends: its cause, completion, backoff or give-up, and the remedy ladders."""

from __future__ import annotations

from dataclasses import replace

from supervisor.core.actions import Action, Decision, Note, Prepare, RecordAttemptEnd, StartTimer
from supervisor.core.backoff import uniform
from supervisor.core.events import Exited, ExitStatus, LaunchFailed
from supervisor.core.phases import Cause, Phase, Timer
from supervisor.core.state import Policy, State
from supervisor.core.steps import _final, _give_up, _next_attempt


def _launch_failed(state: State, event: LaunchFailed, now: float, policy: Policy) -> Decision:
    if event.attempt != state.attempt:
        return state, []
    detail = f"could not start: {event.reason}"
    if state.phase is Phase.STOPPING:
        # STOPPING -> STOPPED: the stop came before the launch could fail
        end = RecordAttemptEnd(state.attempt, Cause.STOPPED, None, False, detail)
        return _final(
            state, Phase.STOPPED, [end], Note("stopped", f"attempt {state.attempt} {detail}; exiting")
        )
    if state.phase is not Phase.STARTING:
        return state, []
    return _failed(state, now, policy, None, detail)


def _exited(state: State, event: Exited, now: float, policy: Policy) -> Decision:
    live = (Phase.RUNNING, Phase.STARTING, Phase.STOPPING, Phase.ENDING)
    if event.attempt != state.attempt or state.phase not in live:
        return state, []
    status = event.status
    end = event.at if event.at is not None else now
    if state.phase is Phase.STOPPING:
        return _exited_while_stopping(state, event, end, policy)
    ending = state.ending if state.phase is Phase.ENDING else None
    finished = ending is not None and state.completion_seen  # it said so, then hung in teardown
    if _completed(state, status, policy) or finished:
        how = "said it finished" if state.completion_seen else "exited 0"
        state = replace(state, last_exit=status, last_cause=Cause.COMPLETED)
        stable = _ran_stably(state, end, policy)
        actions: list[Action] = [
            RecordAttemptEnd(state.attempt, Cause.COMPLETED, status, stable, event.detail)
        ]
        done = Note("completed", f"training finished: attempt {state.attempt} {how} ({status.describe()})")
        if policy.checkpoint_dir:
            # RUNNING | ENDING -> FINISHING
            return replace(state, phase=Phase.FINISHING), [*actions, done, Prepare(state.attempt, final=True)]
        # RUNNING | ENDING -> COMPLETED
        return _final(state, Phase.COMPLETED, actions, done)
    if state.fatal is not None and ending in (None, Cause.HANG):
        # RUNNING | ENDING -> GAVE_UP: relaunching would fail the same way (a rank that
        # raised can leave the others waiting in a collective: a hang after a fatal line)
        stable = _ran_stably(state, end, policy)
        end_action = RecordAttemptEnd(state.attempt, Cause.NOT_RETRYABLE, status, stable, state.fatal)
        state = replace(state, last_exit=status, last_cause=Cause.NOT_RETRYABLE)
        message = f"giving up: attempt {state.attempt} failed ({status.describe()}) and restarting cannot fix it: {state.fatal}"
        return _final(state, Phase.GAVE_UP, [end_action], Note("gave_up", message, "error"))
    if ending is not None:
        # ENDING -> BACKOFF | PREPARING | GAVE_UP. A hang after an out-of-memory line is
        # that OOM (the rank that ran out left the others waiting): its ladder climbs.
        if ending is Cause.HANG and state.watch.oom_line is not None:
            ending = Cause.OOM_CUDA
        return _failed(state, now, policy, status, state.ending_detail, end, ending)
    return _failed(state, now, policy, status, event.detail, end, _failure_cause(state, event))


def _failure_cause(state: State, event: Exited) -> Cause:
    if event.oom_killed:
        return Cause.OOM_HOST
    return Cause.OOM_CUDA if state.watch.oom_line is not None else Cause.CRASH


def _completed(state: State, status: ExitStatus, policy: Policy) -> bool:
    """Exit 0 from a trainer whose exit codes mean something, or any exit after its
    completion line from one whose exit codes lie."""
    clean = status.code == 0
    if state.completion_seen and (clean or not policy.exit_codes_trusted):
        return True
    return clean and policy.exit_codes_trusted


def _exited_while_stopping(state: State, event: Exited, end: float, policy: Policy) -> Decision:
    # STOPPING -> STOPPED. A trainer that had already died on its own before the stop
    # signal went out keeps its real cause, and a crash still counts.
    status = event.status
    stable = _ran_stably(state, end, policy)
    cause = state.ending or Cause.STOPPED  # a stop that came while ending a sick attempt keeps its cause
    if event.before_stop:
        cause = Cause.COMPLETED if _completed(state, status, policy) else _failure_cause(state, event)
        if cause is not Cause.COMPLETED and state.fatal is not None:
            cause = Cause.NOT_RETRYABLE
    progressed = _made_progress(state, stable, policy)
    if cause not in (Cause.COMPLETED, Cause.STOPPED) and not progressed:
        state = replace(
            state, backoff_level=state.backoff_level + 1, without_progress=state.without_progress + 1
        )
    return _final(
        replace(state, last_exit=status, last_cause=cause),
        Phase.STOPPED,
        [RecordAttemptEnd(state.attempt, cause, status, stable, event.detail)],
        Note("stopped", f"attempt {state.attempt} ended ({cause.value}, {status.describe()}); exiting"),
    )


def _failed(
    state: State,
    now: float,
    policy: Policy,
    status: ExitStatus | None,
    detail: str,
    ended_at: float | None = None,
    cause: Cause = Cause.CRASH,
) -> Decision:
    """An attempt ended badly: count it, then relaunch (after backoff) or give up.
    `detail` is what is known beside the exit status (e.g. the last line printed)."""
    stable = _ran_stably(state, ended_at if ended_at is not None else now, policy)
    progressed = _made_progress(state, stable, policy)
    # A stable run restarts the backoff; progress restarts the count towards giving up.
    level = 1 if stable else state.backoff_level + 1
    without = 0 if progressed else state.without_progress + 1
    state = replace(
        state,
        backoff_level=level,
        without_progress=without,
        last_cause=cause,
        last_exit=status,
        stable=stable,
        ending=None,
    )
    actions: list[Action] = [RecordAttemptEnd(state.attempt, cause, status, stable, detail)]
    why = "; ".join(part for part in (status.describe() if status else "", detail) if part)
    verb = "failed" if cause is Cause.CRASH else f"ended ({cause.value})"
    if (stop := _cause_gives_up(state, cause, policy)) is not None:
        return _final(state, Phase.GAVE_UP, actions, Note("gave_up", stop, "error"))
    state, remedy_notes = _escalate(state, cause, policy)
    actions += remedy_notes
    if without >= policy.max_attempts_without_progress:
        if not policy.progress_from_checkpoints:
            return _give_up(state, actions, policy, why)
        # A checkpoint saved just before the crash may still be landing: the preparation
        # verifies it first, and the give-up is decided when that is done.
        message = f"attempt {state.attempt} {verb} ({why}); checking its last checkpoints before giving up"
        state, actions = _next_attempt(state, [*actions, Note("crashed", message, "warning")])
        return replace(state, give_up_pending=True), actions
    delay = policy.backoff.delay_s(level, uniform(state.seed, state.attempt))
    if delay == 0:
        actions.append(Note("crashed", f"attempt {state.attempt} {verb} ({why}); relaunching now", "warning"))
        return _next_attempt(state, actions)
    # RUNNING | ENDING -> BACKOFF
    state = replace(state, phase=Phase.BACKOFF, relaunch_at=now + delay)
    actions += [
        Note("crashed", f"attempt {state.attempt} {verb} ({why}); relaunching in {delay:.1f}s", "warning"),
        StartTimer(Timer.RELAUNCH, state.attempt, delay),
    ]
    return state, actions


def _cause_gives_up(state: State, cause: Cause, policy: Policy) -> str | None:
    """Why this kind of end, repeated, is not worth another attempt."""
    carry = state.carry
    if cause is Cause.NAN and carry.nan_rollbacks > policy.max_nan_rollbacks:
        return (
            f"giving up: the loss went NaN/Inf {carry.nan_rollbacks} times without the run getting past "
            f"where it went bad (max_rollbacks = {policy.max_nan_rollbacks}); last: {state.ending_detail}"
        )
    if cause is Cause.SILENT_RESET and carry.silent_resets > policy.max_silent_resets:
        return (
            f"giving up: the trainer started from scratch {carry.silent_resets} times in a row although a "
            "verified checkpoint was in place for it (silent-reset: its own resume logic did not load it; "
            "see the trainer log and 'train-supervisor plan')"
        )
    return None


def _escalate(state: State, cause: Cause, policy: Policy) -> tuple[State, list[Action]]:
    """After an OOM, the next rung of that kind's remedy ladder (cumulative)."""
    carry = state.carry
    if cause is Cause.OOM_CUDA and carry.oom_cuda_level < len(policy.oom_cuda_remedies):
        rung = policy.oom_cuda_remedies[carry.oom_cuda_level]
        carry = replace(carry, oom_cuda_level=carry.oom_cuda_level + 1)
    elif cause is Cause.OOM_HOST and carry.oom_host_level < len(policy.oom_host_remedies):
        rung = policy.oom_host_remedies[carry.oom_host_level]
        carry = replace(carry, oom_host_level=carry.oom_host_level + 1)
    elif cause is Cause.NAN and policy.nan_remedy is not None:
        return state, [Note("remedy", f"relaunches run with the NaN remedy: {policy.nan_remedy.describe()}")]
    else:
        return state, []
    note = Note("remedy", f"after {cause.value}, relaunches also run with {rung.describe()}", "warning")
    return replace(state, carry=carry), [note]


def _made_progress(state: State, stable: bool, policy: Policy) -> bool:
    """A newer verified checkpoint when there are checkpoints, else a stable run."""
    return state.progressed if policy.progress_from_checkpoints else stable


def _ran_stably(state: State, now: float, policy: Policy) -> bool:
    if state.stable:
        return True
    return state.started_at is not None and now - state.started_at >= policy.stable_after_s
