"""The decision core's entry: `decide(state, event, now, policy) -> (state, actions)`: dispatch, and the
lifecycle between attempts (boot, reclaim, prepare, launch, stop, timers).

Pure: no I/O, no clock reads, no randomness. The phases and their transitions are in
`supervisor.core.phases`.
"""

from __future__ import annotations

from dataclasses import replace

from supervisor.core.actions import (
    Action,
    Decision,
    KillLeftovers,
    KillTrainer,
    Launch,
    Note,
    Prepare,
    Reclaim,
    RecordAttemptEnd,
    StartTimer,
    StopTrainer,
)
from supervisor.core.attempt_end import _exited, _launch_failed
from supervisor.core.backoff import uniform
from supervisor.core.events import (
    Boot,
    CheckpointVerified,
    Event,
    Exited,
    Launched,
    LaunchFailed,
    Prepared,
    PrepareFailed,
    Progress,
    Reclaimed,
    StopRequested,
    TimerFired,
    TrainerSaid,
)
from supervisor.core.health import remedies
from supervisor.core.phases import Cause, Phase, Timer
from supervisor.core.running import _check_liveness, _check_save_landed, _checkpoint_verified, _trainer_signal
from supervisor.core.state import Policy, State
from supervisor.core.steps import _final, _give_up, _next_attempt

# --- the decision -------------------------------------------------------------------


def decide(state: State, event: Event, now: float, policy: Policy) -> Decision:
    new, actions = _decide(state, event, now, policy)
    # A note is about the attempt the event found (with zero backoff the decision that
    # records attempt 1's failure also starts attempt 2).
    stamped = [
        replace(a, attempt=state.attempt) if isinstance(a, Note) and a.attempt is None else a for a in actions
    ]
    return new, stamped


def _decide(state: State, event: Event, now: float, policy: Policy) -> Decision:
    if state.phase.final:
        return state, []
    match event:
        case Boot():
            return _boot(state, event, policy) if state.phase is Phase.IDLE else (state, [])
        case Prepared() | PrepareFailed():
            return _prepared(state, event, now, policy)
        case CheckpointVerified():
            return _checkpoint_verified(state, event, policy)
        case TrainerSaid() | Progress():
            return _trainer_signal(state, event, now, policy)
        case Launched():
            return _launched(state, event, now, policy)
        case LaunchFailed():
            return _launch_failed(state, event, now, policy)
        case Exited():
            return _exited(state, event, now, policy)
        case Reclaimed():
            return _reclaimed(state, event, policy)
        case StopRequested():
            return _stop_requested(state, event, policy)
        case TimerFired():
            return _timer(state, event, now, policy)


def _boot(state: State, event: Boot, policy: Policy) -> Decision:
    if event.completed:
        # IDLE -> COMPLETED
        message = (
            f"this run completed already (attempt {state.attempt}); nothing to do. "
            "`train-supervisor run --again` launches the trainer once more (e.g. after raising its epochs)"
        )
        return _final(
            replace(state, last_cause=Cause.COMPLETED), Phase.COMPLETED, [], Note("completed", message)
        )
    if event.finishing:
        # IDLE -> FINISHING: settle what the previous supervisor began to, then complete
        note = Note("finishing", f"attempt {state.attempt} had finished; settling its final checkpoint state")
        return replace(state, phase=Phase.FINISHING), [note, Prepare(state.attempt, final=True)]
    if not event.unfinished:
        return _next_attempt(state, [])
    # The previous supervisor died with a trainer running: that attempt's end was never
    # seen. It counts against progress unless it had already run stably, so a trainer
    # that takes the whole machine down still ends in a give-up.
    cause = Cause.INTERRUPTED
    actions: list[Action] = [
        RecordAttemptEnd(state.attempt, cause, None, event.unfinished_stable, "supervisor was not running"),
        Note("interrupted", f"attempt {state.attempt} was interrupted: the supervisor stopped while it ran"),
        Reclaim(state.attempt),
    ]
    if not event.unfinished_stable:
        state = replace(
            state,
            backoff_level=state.backoff_level + 1,
            without_progress=state.without_progress + 1,
            last_cause=cause,
        )
    # IDLE -> RECLAIMING
    return replace(state, phase=Phase.RECLAIMING), actions


def _reclaimed(state: State, event: Reclaimed, policy: Policy) -> Decision:
    if event.attempt != state.attempt:
        return state, []
    if state.phase is Phase.STOPPING:
        # STOPPING -> STOPPED (the stop came while reclaiming)
        return _final(state, Phase.STOPPED, [], Note("stopped", "stop requested while reclaiming; exiting"))
    if state.phase is not Phase.RECLAIMING:
        return state, []
    if state.without_progress < policy.max_attempts_without_progress:
        # RECLAIMING -> PREPARING
        return _next_attempt(state, [])
    if not policy.progress_from_checkpoints:
        return _give_up(state, [], policy)
    # RECLAIMING -> PREPARING, then the give-up is decided once its checkpoints are verified
    state, actions = _next_attempt(state, [])
    return replace(state, give_up_pending=True), actions


def _prepared(state: State, event: Prepared | PrepareFailed, now: float, policy: Policy) -> Decision:
    if event.attempt != state.attempt:
        return state, []
    if state.phase is Phase.FINISHING:
        return _finished(state, event)
    out_of_attempts = state.give_up_pending and state.without_progress >= policy.max_attempts_without_progress
    ending = state.phase is Phase.STOPPING or out_of_attempts
    checks, refusal = _launch_checks(event, policy, ending) if isinstance(event, Prepared) else ([], None)
    if state.phase is Phase.STOPPING:
        # STOPPING -> STOPPED (the stop came while preparing; nothing was launched)
        unlaunched = replace(state, attempt=state.attempt - 1)  # only launched attempts count
        note = Note("stopped", "stop requested while preparing; exiting", attempt=state.attempt)
        return _final(unlaunched, Phase.STOPPED, checks, note)
    if state.phase is not Phase.PREPARING:
        return state, []
    if refusal is not None:
        # PREPARING -> GAVE_UP: the checks before the launch refuse it
        unlaunched = replace(state, attempt=state.attempt - 1)
        message = f"giving up: cannot prepare attempt {state.attempt}: {refusal}"
        return _final(unlaunched, Phase.GAVE_UP, checks, Note("gave_up", message, "error"))
    if isinstance(event, PrepareFailed):
        unlaunched = replace(state, attempt=state.attempt - 1)  # only launched attempts count
        if event.retry and state.prepare_retries < policy.max_attempts_without_progress:
            return _prepare_again(unlaunched, event.reason, now, policy)
        # PREPARING -> GAVE_UP: relaunching could not resume from verified state
        message = f"giving up: cannot prepare attempt {state.attempt}: {event.reason}"
        return _final(unlaunched, Phase.GAVE_UP, [], Note("gave_up", message, "error"))
    state = replace(state, prepare_retries=0)
    if out_of_attempts:
        # PREPARING -> GAVE_UP: even with every checkpoint verified, no progress. What the
        # last attempt left holding the GPU is killed all the same: nothing may outlive us.
        last = state.last_exit.describe() if state.last_exit else ""
        return _give_up(replace(state, attempt=state.attempt - 1), checks, policy, last)
    watch = replace(state.watch, resume_step=event.resume_step, resume_epoch=event.resume_epoch)
    state = replace(state, give_up_pending=False, watch=watch)
    notes: list[Action] = [Note("plan", event.summary)] if event.summary else []
    if state.carry.nan_below is not None:
        # The rollback is done: what was verified at or after the bound is gone, and
        # progress is counted again from where the trainer resumes.
        carry = replace(state.carry, nan_below=None)
        state = replace(state, carry=carry, best_step=event.resume_step)
    # PREPARING -> STARTING
    fixes = remedies(state.carry, policy.oom_cuda_remedies, policy.oom_host_remedies, policy.nan_remedy)
    return replace(state, phase=Phase.STARTING), [*notes, *checks, Launch(state.attempt, fixes)]


def _launch_checks(event: Prepared, policy: Policy, ending: bool) -> tuple[list[Action], str | None]:
    """What the checks before a launch found, weighed: notes, a kill of what the last
    attempt left on the GPU, and why the launch is refused (None: it goes ahead, unless
    the run is `ending` anyway: stopped, or out of attempts)."""
    actions: list[Action] = []
    refusal = None
    change = event.config_change
    if change is not None and policy.refuse_config_change:
        actions.append(Note("config_drift", f"config changed: {change.summary}", "error"))
        refusal = (
            f"the trainer's config changed since attempt {change.since} ({change.summary}); "
            "[drift] policy = 'refuse': restore it, or run with --accept-config-change"
        )
    elif change is not None:
        message = f"the trainer's config changed since attempt {change.since}: {change.summary}"
        actions.append(Note("config_drift", message, "warning"))
    if event.gpu_held is not None:
        goes_ahead = refusal is None and not ending
        after = "relaunching anyway" if goes_ahead else "killed what was left of the last attempt"
        actions += [KillLeftovers(), Note("gpu_not_released", f"{event.gpu_held}; {after}", "warning")]
    return actions, refusal


def _finished(state: State, event: Prepared | PrepareFailed) -> Decision:
    # FINISHING -> COMPLETED
    if isinstance(event, PrepareFailed):
        message = (
            f"training finished, but its final checkpoint state could not be settled: {event.reason} "
            "(see `train-supervisor plan` for what is wrong and the verified copies to restore from)"
        )
        return _final(state, Phase.COMPLETED, [], Note("final_state_unsettled", message, "error"))
    summary = f": {event.summary}" if event.summary else ""
    if event.resume_step is None:
        message = f"training finished, but it leaves no verified checkpoint{summary}"
        return _final(state, Phase.COMPLETED, [], Note("final_state_unsettled", message, "error"))
    note = Note("final_state", f"the final checkpoint state is settled{summary}")
    return _final(state, Phase.COMPLETED, [], note)


def _prepare_again(state: State, reason: str, now: float, policy: Policy) -> Decision:
    """A preparation that may work later (room made on a full disk) is tried again after
    a backoff, up to max_attempts_without_progress times in a row."""
    retries = state.prepare_retries + 1
    state = replace(state, prepare_retries=retries)
    delay = policy.backoff.delay_s(retries, uniform(state.seed, state.attempt + 1))
    left = policy.max_attempts_without_progress - retries
    message = f"cannot prepare attempt {state.attempt + 1}: {reason}; trying again"
    if delay == 0:
        # PREPARING -> PREPARING
        return _next_attempt(state, [Note("prepare_failed", f"{message} now ({left} more tries)", "error")])
    # PREPARING -> BACKOFF
    state = replace(state, phase=Phase.BACKOFF, relaunch_at=now + delay)
    note = Note("prepare_failed", f"{message} in {delay:.1f}s ({left} more tries)", "error")
    return state, [note, StartTimer(Timer.RELAUNCH, state.attempt, delay)]


def _launched(state: State, event: Launched, now: float, policy: Policy) -> Decision:
    if event.attempt != state.attempt or state.phase is not Phase.STARTING:
        return state, []  # e.g. a stop arrived first: stay STOPPING
    # STARTING -> RUNNING
    state = replace(state, phase=Phase.RUNNING, started_at=now)
    note = Note("launched", f"attempt {event.attempt} running as pid {event.pid}")
    actions: list[Action] = [note, StartTimer(Timer.STABLE, state.attempt, policy.stable_after_s)]
    if policy.hang_timeout_s is not None and policy.watch_from_launch:
        watch = replace(state.watch, armed=True, check_at=now + policy.startup_timeout_s)
        state = replace(state, watch=watch)
        actions.append(StartTimer(Timer.LIVENESS, state.attempt, policy.startup_timeout_s))
    return state, actions


def _stop_requested(state: State, event: StopRequested, policy: Policy) -> Decision:
    match state.phase:
        case Phase.PREPARING:
            # PREPARING -> STOPPING: let the preparation finish (it moves files), then exit
            note = Note("stopping", f"{event.reason}: exiting once the run directory is prepared")
            return replace(state, phase=Phase.STOPPING), [note]
        case Phase.RUNNING | Phase.STARTING:
            # RUNNING -> STOPPING
            note = Note(
                "stopping",
                f"{event.reason}: stopping attempt {state.attempt} "
                f"({policy.stop_signal}, SIGKILL after {policy.stop_grace_s:g}s)",
            )
            return replace(state, phase=Phase.STOPPING), [
                note,
                StopTrainer(policy.stop_signal, policy.stop_grace_s),
            ]
        case Phase.ENDING:
            # ENDING -> STOPPING: the trainer is being stopped already; exit once it is gone
            note = Note("stopping", f"{event.reason}: exiting once attempt {state.attempt} has stopped")
            return replace(state, phase=Phase.STOPPING), [note]
        case Phase.RECLAIMING:
            # RECLAIMING -> STOPPING: the reclaim is a stop already; finish it, then exit
            note = Note("stopping", f"{event.reason}: exiting once the interrupted attempt is cleared")
            return replace(state, phase=Phase.STOPPING), [note]
        case Phase.FINISHING:
            # FINISHING -> FINISHING: no trainer is left; the settling is bounded, then exit
            return state, [Note("stopping", f"{event.reason}: exiting once the final state is settled")]
        case Phase.STOPPING:
            # STOPPING -> STOPPING, escalated
            return state, [
                Note("killing", f"{event.reason} again: killing the trainer now", "warning"),
                KillTrainer(),
            ]
        case _:
            # BACKOFF | IDLE -> STOPPED: no trainer is running
            where = "before launch" if state.phase is Phase.IDLE else "during backoff"
            return _final(state, Phase.STOPPED, [], Note("stopped", f"{event.reason} {where}; exiting"))


def _timer(state: State, event: TimerFired, now: float, policy: Policy) -> Decision:
    if event.attempt != state.attempt:
        return state, []
    if event.timer is Timer.STABLE and state.phase is Phase.RUNNING and not state.stable:
        # RUNNING -> RUNNING, backoff reset (and the give-up count, without checkpoints)
        state = replace(state, stable=True, backoff_level=0)
        if not policy.positions_comparable and state.carry.nan_rollbacks:
            # Steps cannot tell whether it got past a bad step: a stable run says so.
            state = replace(state, carry=replace(state.carry, nan_rollbacks=0))
        if not policy.progress_from_checkpoints:
            state = replace(state, without_progress=0, progressed=True)
        note = Note("stable", f"attempt {state.attempt} has run {policy.stable_after_s:g}s: backoff reset")
        return state, [note]
    if event.timer is Timer.RELAUNCH and state.phase is Phase.BACKOFF:
        # BACKOFF -> PREPARING
        return _next_attempt(state, [])
    if event.timer is Timer.LIVENESS and state.phase is Phase.RUNNING and state.watch.armed:
        return _check_liveness(state, now, policy)
    if event.timer is Timer.SAVE_LANDED and state.phase is Phase.RUNNING:
        return _check_save_landed(state, now, policy)
    return state, []


def next_delay_s(state: State, policy: Policy) -> float:
    """The un-jittered delay the next failure would wait (for `status`)."""
    level = 1 if state.stable else state.backoff_level + 1
    return policy.backoff.base_s(level)
