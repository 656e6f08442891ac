"""Decisions while an attempt runs: verified checkpoints, the trainer's lines, progress, the NaN streak, a silent reset, saves that never land, and liveness (hangs)."""

from __future__ import annotations

from dataclasses import replace

from supervisor.core.actions import Action, Decision, Note, StartTimer
from supervisor.core.events import CheckpointVerified, Progress, Said, TrainerSaid
from supervisor.core.health import Carry, Watch, far_below, hang_budget_s, nan_bound
from supervisor.core.phases import Cause, Phase, Timer
from supervisor.core.state import Policy, State
from supervisor.core.steps import _end


def _checkpoint_verified(state: State, event: CheckpointVerified, policy: Policy) -> Decision:
    carry = state.carry
    if carry.nan_below is not None and event.step >= carry.nan_below:
        return state, []  # saved after the loss went bad: the rollback moves it aside
    if carry.nan_rolled_back_at is not None and event.step >= carry.nan_rolled_back_at:
        # The run got past the step where it last went bad: rollbacks count from zero.
        state = replace(state, carry=replace(carry, nan_rollbacks=0, nan_rolled_back_at=None))
    if state.best_step is not None and event.step <= state.best_step:
        return state, []
    state = replace(state, best_step=event.step)
    if policy.progress_from_checkpoints:
        state = replace(state, without_progress=0)
    if state.phase in (Phase.STARTING, Phase.RUNNING, Phase.STOPPING, Phase.ENDING):
        # Credit the live attempt. Otherwise the file came from the attempt that already
        # ended: its count was just cleared, and the next attempt must earn its own.
        state = replace(state, progressed=True)
    return state, [Note("progress", f"newest verified checkpoint: {policy.unit} {event.step}")]


def _trainer_signal(state: State, event: TrainerSaid | Progress, now: float, policy: Policy) -> Decision:
    if isinstance(event, Progress):
        return _progress(state, event, now, policy)
    return _trainer_said(state, event, now, policy)


def _trainer_said(state: State, event: TrainerSaid, now: float, policy: Policy) -> Decision:
    if event.attempt != state.attempt or state.phase not in (Phase.RUNNING, Phase.STARTING, Phase.STOPPING):
        return state, []
    line = event.line.strip()[:300]
    match event.said:
        case Said.FATAL if state.fatal is None:
            state = replace(state, fatal=f"{event.explain} (the trainer said: {line})")
            return state, [Note("trainer_fatal", f"{event.explain}: {line}", "error")]
        case Said.OOM if state.watch.oom_line is None:
            state = replace(state, watch=replace(state.watch, oom_line=line))
            return state, [Note("trainer_oom", f"the trainer ran out of GPU memory: {line}", "warning")]
        case Said.COMPLETED if not state.completion_seen:
            state = replace(state, completion_seen=True)
            return state, [Note("trainer_completed", f"the trainer says it finished: {line}")]
        case Said.LOADED:
            state = replace(state, carry=replace(state.carry, silent_resets=0))
            return state, [Note("trainer_loaded", f"the trainer says it resumed: {line}")]
        case Said.FRESH_START if state.watch.resume_step is not None and state.phase is Phase.RUNNING:
            why = f"the trainer says it starts afresh although it should resume from {policy.unit} {state.watch.resume_step}: {line}"
            return _silent_reset(state, why, policy)
        case Said.FRESH_START:
            return state, [
                Note("trainer_fresh_start", f"the trainer says it starts afresh: {line}", "warning")
            ]
        case Said.SAVED if state.phase is Phase.RUNNING:
            return _save_said(state, line, now, policy)
    return state, []


def _save_said(state: State, line: str, now: float, policy: Policy) -> Decision:
    """The first save announced since a checkpoint last landed starts the grace period."""
    watch, grace = state.watch, policy.save_landing_grace_s
    if not policy.checkpoint_dir or watch.save_warned or watch.save_said_at is not None:
        return state, []
    state = replace(state, watch=replace(watch, save_said_at=now, save_said_line=line))
    return state, [StartTimer(Timer.SAVE_LANDED, state.attempt, grace)]


def _with_gap(carry: Carry, watch: Watch, given: float) -> Carry:
    """The longest interval between signs of progress, with the one that ends at `given`."""
    last = watch.last_progress_at
    if last is None or not watch.armed or given <= last:
        return carry
    gap = given - last
    return (
        carry
        if carry.longest_gap_s is not None and gap <= carry.longest_gap_s
        else replace(carry, longest_gap_s=gap)
    )


def _save_landed(watch: Watch) -> Watch:
    return replace(watch, save_said_at=None, save_said_line="")


def _check_save_landed(state: State, now: float, policy: Policy) -> Decision:
    watch, grace = state.watch, policy.save_landing_grace_s
    if watch.save_said_at is None or watch.save_warned:
        return state, []
    if now < watch.save_said_at + grace - 1e-6:
        return state, []  # a newer announcement's timer is pending
    why = (
        f"the trainer said it saved a checkpoint ({watch.save_said_line}) {now - watch.save_said_at:.0f}s ago, "
        f"but nothing landed in the checkpoint directory {policy.checkpoint_dir}: the trainer writes "
        "elsewhere, so no checkpoint of this run is verified or protected. Check adapter.checkpoint_dir "
        "(train-supervisor init finds it from the command)."
    )
    state = replace(state, watch=replace(watch, save_warned=True))
    return state, [Note("saves_not_landing", why, "error")]


def _progress(state: State, event: Progress, now: float, policy: Policy) -> Decision:
    if event.attempt != state.attempt or state.phase is not Phase.RUNNING:
        return state, []
    # When the sign was given: a checkpoint's is its last write, not its landing.
    given = min(now, event.at) if event.at is not None else now
    if state.started_at is not None and given < state.started_at:
        return state, []  # written before this attempt began: no sign of its life
    watch, actions = state.watch, list[Action]()
    if event.source == "checkpoint":  # what the trainer said it saved has landed
        watch = _save_landed(watch)
    last = watch.last_progress_at
    carry = _with_gap(state.carry, watch, given)
    sign = f"{event.source}" + (f" at {event.position}" if event.position is not None else "")
    watch = replace(watch, last_progress_at=max(given, last) if last is not None else given, last_sign=sign)
    if not watch.armed and policy.hang_timeout_s is not None and event.source == "heartbeat":
        watch = replace(watch, armed=True)  # the trainer sends heartbeats: watch it from now on
    if watch.armed:
        # The pending check may be for a later deadline (the startup budget): bring it forward.
        assert watch.last_progress_at is not None
        deadline = watch.last_progress_at + _hang_budget(watch, carry, policy)
        if watch.check_at is None or deadline < watch.check_at - 1e-6:
            watch = replace(watch, check_at=deadline)
            actions.append(StartTimer(Timer.LIVENESS, state.attempt, max(0.0, deadline - now)))
    state = replace(state, carry=carry)
    if event.source == "output" and (state.fatal is not None or watch.oom_line is not None):
        # It went on after the error it printed (e.g. an export that failed and was
        # only reported, or a batch skipped after an OOM): that error did not end it.
        what = state.fatal or watch.oom_line
        actions.append(Note("trainer_went_on", f"the trainer went on after an error it printed: {what}"))
        state, watch = replace(state, fatal=None), replace(watch, oom_line=None)
    if event.position is not None:
        watch = replace(watch, position=event.position)
    counted = event.epoch if policy.reset_epoch_offset is not None else event.position
    if counted is not None and not watch.reset_checked and watch.resume_step is not None:
        watch = replace(watch, reset_checked=True)
        reset = _check_reset(watch, counted, policy)
        if reset is not None:
            state, more = _silent_reset(replace(state, watch=watch), reset, policy)
            return state, [*actions, *more]
        state = replace(state, carry=replace(state.carry, silent_resets=0))
    return _nan_streak(replace(state, watch=watch), event, actions, policy)


def _check_reset(watch: Watch, counted: int, policy: Policy) -> str | None:
    """Why the first step (or epoch) the attempt reports says it started over, if it does."""
    resume = watch.resume_step
    assert resume is not None
    if not policy.positions_comparable:
        return None
    if policy.reset_epoch_offset is not None:
        epoch = watch.resume_epoch
        if epoch is None or counted >= epoch + policy.reset_epoch_offset:
            return None  # (VITS resuming in epoch 1 looks like a fresh start: not told apart)
        saved_in = f" (epoch {epoch})" if policy.unit != "epoch" else ""
        return (
            f"the trainer reports epoch {counted} although it should resume from verified {policy.unit} "
            f"{resume}{saved_in}"
        )
    if not far_below(counted, resume):
        return None
    unit = policy.unit
    return f"the trainer reports {unit} {counted} although it should resume from verified {unit} {resume}"


def _nan_streak(state: State, event: Progress, actions: list[Action], policy: Policy) -> Decision:
    watch = state.watch
    if event.nonfinite is None:
        return state, actions
    if not event.nonfinite:
        return replace(state, watch=replace(watch, bad_readings=0, first_bad_position=None)), actions
    if watch.bad_readings == 0:
        first = event.position if event.position is not None else watch.position
        watch = replace(
            watch,
            first_bad_position=first,
            first_bad_line=event.line.strip()[:200],
            best_at_first_bad=state.best_step,
        )
    watch = replace(watch, bad_readings=watch.bad_readings + 1)
    state = replace(state, watch=watch)
    if watch.bad_readings < policy.nan_tolerance:
        return state, actions
    bound = nan_bound(watch, policy.positions_comparable)
    if bound is not None and state.carry.nan_rolled_back_at is not None and watch.resume_step is not None:
        # Bad again before getting past the last bad step: the state it resumed from may
        # be bad already (losses can reach the supervisor late): go back further.
        bound = min(bound, watch.resume_step)
    carry = replace(
        state.carry,
        nan_below=bound,
        nan_rolled_back_at=bound,
        nan_rollbacks=state.carry.nan_rollbacks + 1,
        nan_remedy=policy.nan_remedy is not None,
    )
    where = f" from {policy.unit} {watch.first_bad_position}" if watch.first_bad_position is not None else ""
    rollback = (
        f"rolling back below {policy.unit} {bound}"
        if bound is not None
        else "steps restart at every launch, so no rollback by step"
    )
    why = (
        f"the loss is not finite{where} ({watch.bad_readings} bad reading(s) in a row; "
        f"first: {watch.first_bad_line or event.source}); {rollback}"
    )
    state, more = _end(replace(state, carry=carry), Cause.NAN, why, policy)
    return state, [*actions, *more]


def _silent_reset(state: State, why: str, policy: Policy) -> Decision:
    carry = replace(state.carry, silent_resets=state.carry.silent_resets + 1)
    return _end(replace(state, carry=carry), Cause.SILENT_RESET, why, policy)


def _hang_budget(watch: Watch, carry: Carry, policy: Policy) -> float:
    assert policy.hang_timeout_s is not None
    return hang_budget_s(
        watch,
        carry,
        timeout_s=policy.hang_timeout_s,
        startup_timeout_s=policy.startup_timeout_s,
        learn_factor=policy.learn_factor,
        learn_min_s=policy.learn_min_s,
    )


def _check_liveness(state: State, now: float, policy: Policy) -> Decision:
    watch = state.watch
    since = watch.last_progress_at if watch.last_progress_at is not None else state.started_at
    assert since is not None
    budget = _hang_budget(watch, state.carry, policy)
    deadline = since + budget
    if now < deadline - 1e-6:
        if watch.check_at is not None and now < watch.check_at - 1e-6:
            return state, []  # an earlier check, superseded: the one at check_at is pending
        # RUNNING -> RUNNING: progress came in time; check again at the new deadline
        state = replace(state, watch=replace(watch, check_at=deadline))
        return state, [StartTimer(Timer.LIVENESS, state.attempt, deadline - now)]
    if watch.last_progress_at is None:
        why = f"no sign of progress {now - since:.0f}s after launch (startup_timeout_s = {budget:g})"
    else:
        why = f"no sign of progress for {now - since:.0f}s (budget {budget:g}s; last: {watch.last_sign})"
    # RUNNING -> ENDING
    return _end(state, Cause.HANG, why, policy)
