"""The decision core, driven by replayed event histories on a fake clock."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.core import (
    EXIT_GAVE_UP,
    EXIT_OK,
    Action,
    Boot,
    Cause,
    CheckpointVerified,
    Event,
    Exited,
    ExitStatus,
    Finish,
    KillTrainer,
    Launch,
    Launched,
    LaunchFailed,
    Note,
    Phase,
    Prepare,
    Prepared,
    PrepareFailed,
    Reclaim,
    Reclaimed,
    RecordAttemptEnd,
    StartTimer,
    State,
    StopRequested,
    StopTrainer,
    Timer,
    TimerFired,
    next_delay_s,
)
from supervisor.core.backoff import Backoff, uniform
from tests.support.replay import CRASH, POLICY, Replay, booted, of_type


def test_boot_prepares_then_launches_the_first_attempt() -> None:
    replay = Replay()
    assert replay.send(Boot()) == [Prepare(1)]
    assert replay.state.phase is Phase.PREPARING
    actions = replay.send(Prepared(1, "resume from step 100 (ckpt_100.pt)"))
    assert actions == [Note("plan", "resume from step 100 (ckpt_100.pt)", attempt=1), Launch(1)]
    assert replay.state.phase is Phase.STARTING


def test_launched_runs_and_arms_the_stable_timer() -> None:
    replay = booted()
    actions = replay.send(Launched(1, pid=42))
    assert replay.state.phase is Phase.RUNNING
    assert StartTimer(Timer.STABLE, 1, 300.0) in actions


def test_quick_crashes_back_off_exponentially_then_give_up() -> None:
    replay = booted()
    delays = []
    for _ in range(3):
        actions = replay.run_attempt(lasting=5)
        (timer,) = of_type(actions, StartTimer)
        delays.append(timer.delay_s)
        assert replay.state.phase is Phase.BACKOFF
        assert of_type(replay.fire_relaunch(), Launch)
    assert delays == [10.0, 20.0, 40.0]
    actions = replay.run_attempt(lasting=5)
    assert replay.state.phase is Phase.GAVE_UP
    assert actions[-1] == Finish(EXIT_GAVE_UP)
    (note,) = [n for n in of_type(actions, Note) if n.kind == "gave_up"]
    assert "4 consecutive attempts without progress" in note.message
    assert "exit code 1" in note.message


def test_backoff_is_capped_at_max() -> None:
    policy = replace(POLICY, max_attempts_without_progress=100)
    replay = booted(policy)
    delays = []
    for _ in range(8):
        (timer,) = of_type(replay.run_attempt(lasting=1), StartTimer)
        delays.append(timer.delay_s)
        replay.fire_relaunch()
    assert delays == [10, 20, 40, 80, 100, 100, 100, 100]


def test_a_stable_run_resets_backoff_and_progress_counters() -> None:
    replay = booted()
    replay.run_attempt(lasting=5)
    replay.fire_relaunch()
    replay.run_attempt(lasting=5)
    replay.fire_relaunch()
    assert replay.state.backoff_level == 2
    assert replay.state.without_progress == 2
    actions = replay.run_attempt(lasting=400)  # stable, then crashed
    (timer,) = of_type(actions, StartTimer)
    assert timer.delay_s == 10.0  # back to the first level
    assert replay.state.without_progress == 0
    assert of_type(actions, RecordAttemptEnd)[0].stable is True


def test_stability_counts_even_if_the_exit_beats_the_timer() -> None:
    replay = booted()
    replay.send(Launched(1, pid=5))
    replay.advance(301)
    actions = replay.send(Exited(1, CRASH))  # the stable timer event is still queued
    assert of_type(actions, StartTimer)[0].delay_s == 10.0
    assert replay.state.without_progress == 0


def test_exit_zero_completes_and_exits_zero() -> None:
    replay = booted()
    actions = replay.run_attempt(lasting=50, status=ExitStatus(code=0))
    assert replay.state.phase is Phase.COMPLETED
    assert of_type(actions, RecordAttemptEnd)[0].cause is Cause.COMPLETED
    assert actions[-1] == Finish(EXIT_OK)


def test_untrusted_exit_codes_turn_exit_zero_into_a_relaunch() -> None:
    replay = booted(replace(POLICY, exit_codes_trusted=False))
    replay.run_attempt(lasting=50, status=ExitStatus(code=0))
    assert replay.state.phase is Phase.BACKOFF
    assert replay.state.last_cause is Cause.CRASH


def test_signals_are_crashes_too() -> None:
    replay = booted()
    actions = replay.run_attempt(lasting=5, status=ExitStatus(signal=9))
    (note,) = [n for n in of_type(actions, Note) if n.kind == "crashed"]
    assert "killed by SIGKILL" in note.message
    assert replay.state.last_exit == ExitStatus(signal=9)


def test_zero_backoff_prepares_the_next_attempt_in_the_same_decision() -> None:
    policy = replace(POLICY, backoff=Backoff(0.0, 0.0, 2.0, 0.5))
    replay = booted(policy)
    actions = replay.run_attempt(lasting=1)
    assert of_type(actions, Prepare) == [Prepare(2)]
    assert not of_type(actions, StartTimer)
    assert replay.state.phase is Phase.PREPARING


def test_jitter_comes_from_the_seed_and_attempt() -> None:
    policy = replace(POLICY, backoff=Backoff(10.0, 100.0, 2.0, 0.5))
    delays = []
    for seed in (1, 1, 2):
        replay = booted(policy, seed=seed)
        delays.append(of_type(replay.run_attempt(lasting=1), StartTimer)[0].delay_s)
    assert delays[0] == delays[1] != delays[2]
    assert delays[0] == pytest.approx(10.0 * (1 + 0.5 * (2 * uniform(1, 1) - 1)))


def test_launch_failure_counts_like_a_crash() -> None:
    replay = booted()
    actions = replay.send(LaunchFailed(1, "FileNotFoundError: no such file"))
    assert replay.state.phase is Phase.BACKOFF
    (end,) = of_type(actions, RecordAttemptEnd)
    assert end.status is None
    assert "could not start" in end.detail


def test_stop_while_running_stops_with_grace_then_exits_zero() -> None:
    replay = booted()
    replay.send(Launched(1, pid=5))
    actions = replay.send(StopRequested("SIGTERM received"))
    assert StopTrainer("SIGTERM", 30.0) in actions
    assert replay.state.phase is Phase.STOPPING
    actions = replay.send(Exited(1, ExitStatus(signal=15)))
    assert replay.state.phase is Phase.STOPPED
    assert of_type(actions, RecordAttemptEnd)[0].cause is Cause.STOPPED
    assert actions[-1] == Finish(EXIT_OK)


def test_a_second_stop_request_kills_at_once() -> None:
    replay = booted()
    replay.send(Launched(1, pid=5))
    replay.send(StopRequested("SIGINT received"))
    actions = replay.send(StopRequested("SIGINT received"))
    assert KillTrainer() in actions
    assert replay.state.phase is Phase.STOPPING


def test_exit_zero_during_a_stop_is_a_stop_not_a_completion() -> None:
    replay = booted()
    replay.send(Launched(1, pid=5))
    replay.send(StopRequested("SIGTERM received"))
    replay.send(Exited(1, ExitStatus(code=0)))
    assert replay.state.phase is Phase.STOPPED


def test_stop_during_backoff_exits_without_relaunching() -> None:
    replay = booted()
    replay.run_attempt(lasting=1)
    actions = replay.send(StopRequested("SIGTERM received"))
    assert replay.state.phase is Phase.STOPPED
    assert actions[-1] == Finish(EXIT_OK)
    assert replay.send(TimerFired(Timer.RELAUNCH, 1)) == []


def test_stop_before_boot_launches_nothing() -> None:
    replay = Replay()
    replay.send(StopRequested("SIGTERM received"))
    assert replay.send(Boot()) == []
    assert replay.state.phase is Phase.STOPPED


def test_stop_before_launch_confirmation_keeps_stopping() -> None:
    replay = booted()
    replay.send(StopRequested("SIGTERM received"))
    assert replay.send(Launched(1, pid=5)) == []
    assert replay.state.phase is Phase.STOPPING


def test_stale_events_are_ignored() -> None:
    replay = booted()
    replay.run_attempt(lasting=1)
    replay.fire_relaunch()
    replay.send(Launched(2, pid=7))
    before = replay.state
    assert replay.send(TimerFired(Timer.STABLE, 1)) == []  # attempt 1's timer
    assert replay.send(Exited(1, CRASH)) == []
    assert replay.send(TimerFired(Timer.RELAUNCH, 2)) == []  # not in backoff
    assert replay.state == before


def test_final_phases_ignore_everything() -> None:
    replay = booted()
    replay.run_attempt(lasting=1, status=ExitStatus(code=0))
    for event in (Boot(), Launched(1, 1), StopRequested("x"), TimerFired(Timer.RELAUNCH, 1)):
        assert replay.send(event) == []


def test_counters_from_the_ledger_carry_a_crash_loop_across_restarts() -> None:
    # The previous supervisor saw 3 quick failures; this one gives up after the next.
    replay = booted(attempt=3, backoff_level=3, without_progress=3)
    assert of_type(replay.actions, Launch) == [Launch(4)]
    replay.run_attempt(lasting=1)
    assert replay.state.phase is Phase.GAVE_UP


def test_an_interrupted_unstable_attempt_is_recorded_counted_and_reclaimed_before_relaunch() -> None:
    replay = Replay(state=State(attempt=2, backoff_level=1, without_progress=1))
    actions = replay.send(Boot(unfinished=True, unfinished_stable=False))
    (end,) = of_type(actions, RecordAttemptEnd)
    assert (end.attempt, end.cause) == (2, Cause.INTERRUPTED)
    assert Reclaim(2) in actions
    assert not of_type(actions, Launch), "never two trainers: clear the old one first"
    assert replay.state.phase is Phase.RECLAIMING
    assert replay.state.without_progress == 2
    assert replay.send(Reclaimed(2)) == [Prepare(3)]


def test_an_interrupted_stable_attempt_does_not_count() -> None:
    replay = Replay(state=State(attempt=2))
    replay.send(Boot(unfinished=True, unfinished_stable=True))
    assert replay.state.without_progress == 0


def test_boot_gives_up_when_the_interrupted_attempt_was_the_last_allowed() -> None:
    replay = Replay(state=State(attempt=3, backoff_level=3, without_progress=3))
    replay.send(Boot(unfinished=True))
    actions = replay.send(Reclaimed(3))
    assert replay.state.phase is Phase.GAVE_UP
    assert actions[-1] == Finish(EXIT_GAVE_UP)
    assert not of_type(replay.actions, Launch)


def test_a_stop_while_reclaiming_waits_for_the_reclaim_then_exits() -> None:
    replay = Replay(state=State(attempt=1))
    replay.send(Boot(unfinished=True))
    replay.send(StopRequested("SIGTERM received"))
    assert replay.state.phase is Phase.STOPPING
    assert replay.send(StopRequested("SIGTERM received"))[-1] == KillTrainer()
    actions = replay.send(Reclaimed(1))
    assert replay.state.phase is Phase.STOPPED
    assert actions[-1] == Finish(EXIT_OK)
    assert of_type(replay.actions, RecordAttemptEnd)[0].cause is Cause.INTERRUPTED
    assert not of_type(replay.actions, Launch)


def test_a_stop_that_beats_a_failing_launch_still_exits() -> None:
    replay = booted()
    replay.send(StopRequested("SIGTERM received"))
    actions = replay.send(LaunchFailed(1, "FileNotFoundError: gone"))
    assert replay.state.phase is Phase.STOPPED
    (end,) = of_type(actions, RecordAttemptEnd)
    assert end.cause is Cause.STOPPED
    assert "could not start" in end.detail
    assert actions[-1] == Finish(EXIT_OK)


def test_a_crash_seen_before_the_stop_keeps_its_cause_and_counts() -> None:
    replay = booted()
    replay.send(Launched(1, pid=5))
    replay.advance(5)
    replay.send(StopRequested("SIGTERM received"))
    actions = replay.send(Exited(1, CRASH, before_stop=True))
    assert replay.state.phase is Phase.STOPPED
    assert of_type(actions, RecordAttemptEnd)[0].cause is Cause.CRASH
    assert replay.state.without_progress == 1
    assert actions[-1] == Finish(EXIT_OK)


def test_stability_is_judged_by_when_the_leader_exited() -> None:
    replay = booted()
    replay.send(Launched(1, pid=5), at=0.0)
    # The leader died at 100 s; sweeping its leftovers took until 400 s.
    replay.send(Exited(1, CRASH, at=100.0), at=400.0)
    assert replay.state.without_progress == 1
    assert replay.state.stable is False


def test_a_failed_preparation_gives_up_without_launching() -> None:
    replay = Replay()
    replay.send(Boot())
    actions = replay.send(PrepareFailed(1, "the trainer's resume rule would load x, not the verified y"))
    assert replay.state.phase is Phase.GAVE_UP
    assert actions[-1] == Finish(EXIT_GAVE_UP)
    assert "cannot prepare attempt 1" in of_type(actions, Note)[0].message
    assert not of_type(replay.actions, Launch)
    assert replay.state.attempt == 0, "only launched attempts count"


def test_a_preparation_that_may_work_later_is_tried_again_then_given_up() -> None:
    """A move that failed (a full state disk): backed off and prepared again, never
    launched until it works; max_attempts_without_progress times in a row at most."""
    replay = Replay()
    replay.send(Boot())

    def fail_again() -> list[Action]:
        return replay.send(PrepareFailed(replay.state.attempt, "could not move x aside: full", retry=True))

    def retry_fires() -> None:
        replay.send(TimerFired(Timer.RELAUNCH, replay.state.attempt), at=replay.state.relaunch_at)
        assert replay.state.phase is Phase.PREPARING

    delays = []
    for _ in range(2):
        actions = fail_again()
        assert replay.state.phase is Phase.BACKOFF
        assert replay.state.attempt == 0, "no attempt was launched"
        assert "trying again" in of_type(actions, Note)[0].message
        delays += [timer.delay_s for timer in of_type(actions, StartTimer)]
        retry_fires()
    assert delays == [10.0, 20.0]
    assert not of_type(replay.actions, Launch)
    replay.send(Prepared(1))  # room was made: it launches, and the count starts over
    assert of_type(replay.actions, Launch)
    replay.run_attempt(lasting=5)
    retry_fires()
    for _ in range(POLICY.max_attempts_without_progress):
        fail_again()
        assert replay.state.phase is Phase.BACKOFF
        retry_fires()
    actions = fail_again()
    assert replay.state.phase is Phase.GAVE_UP
    assert actions[-1] == Finish(EXIT_GAVE_UP)
    assert replay.state.attempt == 1


def test_a_stop_while_preparing_exits_once_the_preparation_is_done() -> None:
    replay = Replay()
    replay.send(Boot())
    replay.send(StopRequested("SIGTERM received"))
    assert replay.state.phase is Phase.STOPPING
    actions = replay.send(Prepared(1))
    assert replay.state.phase is Phase.STOPPED
    assert actions[-1] == Finish(EXIT_OK)
    assert not of_type(replay.actions, Launch)
    assert replay.state.attempt == 0, "only launched attempts count: the next run starts at 1"


CHECKPOINTS = replace(POLICY, progress_from_checkpoints=True)


def test_with_checkpoints_a_stable_run_resets_the_backoff_but_not_the_give_up_count() -> None:
    replay = booted(CHECKPOINTS)
    replay.run_attempt(lasting=1)
    replay.fire_relaunch()
    actions = replay.run_attempt(lasting=400)  # stable, but no newer verified checkpoint
    assert of_type(actions, StartTimer)[0].delay_s == 10.0
    assert replay.state.without_progress == 2


def test_with_checkpoints_a_newer_verified_checkpoint_is_progress() -> None:
    replay = booted(CHECKPOINTS)
    replay.run_attempt(lasting=1)
    replay.fire_relaunch()
    replay.run_attempt(lasting=1)
    replay.fire_relaunch()
    assert replay.state.without_progress == 2
    actions = replay.send(CheckpointVerified(step=1000))
    assert replay.state.without_progress == 0
    assert replay.state.best_step == 1000
    assert of_type(actions, Note)[0].kind == "progress"
    replay.run_attempt(lasting=1)  # it crashed, but after making progress
    assert replay.state.without_progress == 0
    assert replay.send(CheckpointVerified(step=900)) == [], "an older step is no progress"


def test_a_checkpoint_verified_between_attempts_is_the_previous_attempts_progress() -> None:
    replay = booted(CHECKPOINTS)
    replay.run_attempt(lasting=1)  # it saved step 10, then crashed before it was verified
    assert replay.state.without_progress == 1
    replay.send(TimerFired(Timer.RELAUNCH, 1), at=replay.state.relaunch_at)
    replay.send(CheckpointVerified(step=10))  # verified while attempt 2 is being prepared
    assert replay.state.without_progress == 0
    replay.send(Prepared(2))
    replay.run_attempt(lasting=1)  # attempt 2 made no progress of its own
    assert replay.state.without_progress == 1


def test_with_checkpoints_attempts_that_verify_nothing_new_end_in_a_give_up() -> None:
    replay = booted(CHECKPOINTS, best_step=5000)
    for _ in range(3):
        replay.send(CheckpointVerified(step=5000))  # re-saved, same step: not progress
        replay.run_attempt(lasting=1)
        replay.fire_relaunch()
    actions = replay.run_attempt(lasting=1)
    # The give-up waits until its last checkpoints are verified: the preparation does that.
    assert replay.state.phase is Phase.PREPARING
    assert "checking its last checkpoints before giving up" in of_type(actions, Note)[-1].message
    actions = replay.send(Prepared(replay.state.attempt))
    assert replay.state.phase is Phase.GAVE_UP
    assert replay.state.attempt == 4, "the attempt that was never launched is not counted"
    assert actions[-1] == Finish(EXIT_GAVE_UP)


def test_with_checkpoints_a_save_just_before_the_last_allowed_crash_keeps_the_run_going() -> None:
    replay = booted(CHECKPOINTS)
    for _ in range(3):
        replay.run_attempt(lasting=1)
        replay.fire_relaunch()
    replay.run_attempt(lasting=1)  # it saved step 800 just before it died
    replay.send(CheckpointVerified(step=800))  # verified while the next attempt is prepared
    actions = replay.send(Prepared(replay.state.attempt))
    assert of_type(actions, Launch) == [Launch(5)]
    assert replay.state.without_progress == 0


def test_next_delay_for_status() -> None:
    replay = booted()
    assert next_delay_s(replay.state, POLICY) == 10.0
    replay.run_attempt(lasting=1)
    assert next_delay_s(replay.state, POLICY) == 20.0


# --- properties over random histories -------------------------------------------------


@dataclass
class Edge:
    """A model of the daemon's edges: what they may report, and in what order."""

    preparing: int | None = None  # Prepare under way, not yet reported
    launched: int | None = None  # launched, Launched not yet reported
    running: int | None = None  # reported Launched, not yet ended
    reclaiming: int | None = None

    def absorb(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Launch):
                assert self.launched is None, "never two trainers at once"
                assert self.running is None, "never two trainers at once"
                self.launched = action.attempt
            if isinstance(action, Reclaim):
                self.reclaiming = action.attempt
            if isinstance(action, Prepare):
                self.preparing = action.attempt

    def reports(self) -> list[Event]:
        """Events the edges could deliver next."""
        events: list[Event] = []
        if self.preparing is not None:
            events += [Prepared(self.preparing), PrepareFailed(self.preparing, "x")]
        if self.launched is not None:
            events += [Launched(self.launched, pid=1), LaunchFailed(self.launched, "x")]
        if self.running is not None:
            events += [
                Exited(self.running, s)
                for s in (ExitStatus(code=0), ExitStatus(code=1), ExitStatus(signal=9))
            ]
        if self.reclaiming is not None:
            events.append(Reclaimed(self.reclaiming))
        return events

    def delivered(self, event: Event) -> None:
        if isinstance(event, Launched):
            self.launched, self.running = None, event.attempt
        elif isinstance(event, LaunchFailed):
            self.launched = None
        elif isinstance(event, Exited):
            self.running = None
        elif isinstance(event, Reclaimed):
            self.reclaiming = None
        elif isinstance(event, Prepared | PrepareFailed):
            self.preparing = None


def pending_timers(replay: Replay) -> list[Event]:
    return [TimerFired(timer, replay.state.attempt) for timer in Timer]


@settings(max_examples=400)
@given(
    unfinished=st.booleans(),
    choices=st.lists(st.tuples(st.integers(0, 100), st.floats(0, 1000)), max_size=40),
)
def test_any_history_keeps_one_trainer_and_can_always_finish(
    unfinished: bool, choices: list[tuple[int, float]]
) -> None:
    replay = Replay(state=State(attempt=1 if unfinished else 0))
    edge = Edge()
    edge.absorb(replay.send(Boot(unfinished=unfinished)))
    for pick, gap in choices:
        verified = CheckpointVerified(step=pick)
        options = [*edge.reports(), *pending_timers(replay), StopRequested("signal"), verified]
        event = options[pick % len(options)]
        replay.advance(gap)
        edge.delivered(event)
        edge.absorb(replay.send(event))
        state = replay.state
        assert state.without_progress <= POLICY.max_attempts_without_progress
        assert (state.exit_code is not None) == state.phase.final
        assert (state.relaunch_at is not None) == (state.phase is Phase.BACKOFF)
        waiting = state.phase in (
            Phase.PREPARING,
            Phase.STARTING,
            Phase.RUNNING,
            Phase.STOPPING,
            Phase.RECLAIMING,
        )
        assert not waiting or edge.reports(), f"{state.phase} waits for an event no edge will send"
    # Liveness: stop, and let the edges report what they still owe; it must end.
    for _ in range(10):
        if replay.state.phase.final:
            break
        reports = edge.reports()
        event = reports[-1] if reports else StopRequested("signal")
        edge.delivered(event)
        edge.absorb(replay.send(event))
        if not replay.state.phase.final and not edge.reports():
            edge.absorb(replay.send(StopRequested("signal")))
    assert replay.state.phase.final
    finishes = of_type(replay.actions, Finish)
    assert len(finishes) == 1
    assert replay.actions[-1] == finishes[0]


def test_a_run_that_completed_before_is_not_relaunched() -> None:
    replay = Replay(state=State(attempt=4))
    actions = replay.send(Boot(completed=True))
    assert replay.state.phase is Phase.COMPLETED
    assert replay.state.attempt == 4
    assert not of_type(actions, Prepare)
    assert of_type(actions, Finish) == [Finish(EXIT_OK)]
    assert "run --again" in of_type(actions, Note)[0].message
