"""The core on a sick attempt: hangs, NaN losses, out-of-memory ends and silent fresh
starts, replayed on a fake clock."""

from __future__ import annotations

from dataclasses import replace

import pytest

from supervisor.core import (
    EXIT_GAVE_UP,
    Boot,
    Cause,
    CheckpointVerified,
    Exited,
    ExitStatus,
    Launch,
    Launched,
    Note,
    Phase,
    Policy,
    Prepare,
    Prepared,
    Progress,
    RecordAttemptEnd,
    StartTimer,
    StopRequested,
    StopTrainer,
    Timer,
    TimerFired,
    TrainerSaid,
)
from supervisor.core.health import Carry, Remedy, Watch, hang_budget_s, nan_bound, with_remedies
from tests.support.replay import CRASH, POLICY, Replay, of_type
from trainer_adapters.base import Said

WATCHED = replace(
    POLICY,
    hang_timeout_s=60.0,
    startup_timeout_s=600.0,
    watch_from_launch=True,
    progress_from_checkpoints=True,
)
EXPANDABLE = Remedy("oom-cuda remedy 1", env=(("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True"),))
SMALLER = Remedy("oom-cuda remedy 2", args=(("--batch-size", "4"),))
LOWER_LR = Remedy("nan remedy", args=(("--lr", "1e-5"),))


def running(policy: Policy = WATCHED, resume_step: int | None = None) -> Replay:
    replay = Replay(policy=policy)
    replay.send(Boot())
    replay.send(Prepared(1, resume_step=resume_step))
    replay.send(Launched(1, pid=10))
    return replay


def liveness_timers(actions: list[object]) -> list[float]:
    return [a.delay_s for a in of_type(actions, StartTimer) if a.timer is Timer.LIVENESS]  # type: ignore[arg-type]


def fire_liveness(replay: Replay) -> list[object]:
    return replay.send(TimerFired(Timer.LIVENESS, replay.state.attempt))  # type: ignore[return-value]


TERMINATED = ExitStatus(signal=15)


def ended_with(replay: Replay, status: ExitStatus = TERMINATED) -> RecordAttemptEnd:
    actions = replay.send(Exited(replay.state.attempt, status))
    (end,) = of_type(actions, RecordAttemptEnd)
    return end  # type: ignore[no-any-return]


# --- hangs ------------------------------------------------------------------------------


def test_a_launch_arms_the_startup_budget_and_a_silent_trainer_is_a_hang() -> None:
    replay = Replay(policy=WATCHED)
    replay.send(Boot())
    replay.send(Prepared(1))
    actions = replay.send(Launched(1, pid=10))
    assert liveness_timers(actions) == [600.0]
    replay.advance(600.0)
    actions = fire_liveness(replay)
    assert replay.state.phase is Phase.ENDING
    assert of_type(actions, StopTrainer) == [StopTrainer("SIGTERM", 30.0)]
    (note,) = of_type(actions, Note)
    assert note.kind == "hang"
    assert "startup_timeout_s" in note.message
    end = ended_with(replay)
    assert end.cause is Cause.HANG
    assert replay.state.phase is Phase.BACKOFF
    assert replay.state.last_cause is Cause.HANG


def test_the_first_sign_brings_the_check_forward_to_the_step_budget() -> None:
    replay = running()
    replay.advance(100.0)
    actions = replay.send(Progress(1, "output", position=5))
    assert liveness_timers(actions) == [60.0]  # not at the startup deadline, 500 s later
    replay.advance(30.0)
    assert liveness_timers(replay.send(Progress(1, "output", position=6))) == []  # a later deadline
    replay.advance(30.0)
    actions = fire_liveness(replay)  # the check for the first sign: the second moved the deadline
    assert replay.state.phase is Phase.RUNNING
    assert liveness_timers(actions) == [pytest.approx(30.0)]
    replay.advance(30.0)
    fire_liveness(replay)
    assert replay.state.phase is Phase.ENDING
    replay.advance(440.0)
    assert fire_liveness(replay) == []  # the startup timer, late and stale


def test_the_step_budget_applies_after_the_first_sign_and_is_rechecked_at_its_deadline() -> None:
    replay = running()
    replay.advance(10.0)
    replay.send(Progress(1, "output", position=5))
    replay.advance(50.0)
    replay.send(Progress(1, "heartbeat", position=6))
    replay.advance(60.0)
    actions = fire_liveness(replay)
    assert replay.state.phase is Phase.ENDING
    assert (
        "no sign of progress for 60s (budget 60s; last: heartbeat at 6)" in of_type(actions, Note)[0].message
    )


def test_a_check_before_the_deadline_is_set_again_for_the_rest() -> None:
    replay = running()
    replay.advance(20.0)
    replay.send(Progress(1, "checkpoint"))  # check at +60
    replay.advance(40.0)
    replay.send(Progress(1, "heartbeat"))  # deadline now 60 s later
    replay.advance(20.0)
    actions = fire_liveness(replay)
    assert replay.state.phase is Phase.RUNNING
    assert liveness_timers(actions) == [pytest.approx(40.0)]
    replay.advance(40.0)
    fire_liveness(replay)
    assert replay.state.phase is Phase.ENDING


def test_without_readable_progress_heartbeats_arm_the_watch_and_output_does_not() -> None:
    policy = replace(WATCHED, watch_from_launch=False)
    replay = running(policy)
    assert liveness_timers(replay.actions) == []
    assert liveness_timers(replay.send(Progress(1, "output", position=3))) == []
    assert liveness_timers(replay.send(Progress(1, "heartbeat", position=4))) == [60.0]
    assert liveness_timers(replay.send(Progress(1, "heartbeat", position=5))) == []


def test_no_hang_detection_when_it_is_off() -> None:
    replay = running(replace(WATCHED, hang_timeout_s=None))
    replay.send(Progress(1, "heartbeat", position=4))
    assert liveness_timers(replay.actions) == []
    replay.advance(10_000.0)
    assert fire_liveness(replay) == []


def test_a_learned_budget_is_a_multiple_of_the_longest_gap_within_bounds() -> None:
    policy = replace(WATCHED, learn_factor=5.0, learn_min_s=20.0, hang_timeout_s=600.0)
    replay = running(policy)
    for gap in (1.0, 3.0, 2.0):
        replay.advance(gap)
        replay.send(Progress(1, "heartbeat", position=int(replay.now)))
    assert replay.state.carry.longest_gap_s == 3.0
    replay.advance(20.0)
    fire_liveness(replay)
    assert replay.state.phase is Phase.ENDING  # max(20, 5 x 3) = 20 s
    watch = Watch(last_progress_at=0.0)
    common = {"timeout_s": 600.0, "startup_timeout_s": 900.0, "learn_min_s": 20.0}
    assert hang_budget_s(watch, Carry(longest_gap_s=10.0), learn_factor=5.0, **common) == 50.0
    assert hang_budget_s(watch, Carry(longest_gap_s=1000.0), learn_factor=5.0, **common) == 600.0
    assert hang_budget_s(Watch(), Carry(longest_gap_s=10.0), learn_factor=5.0, **common) == 900.0
    assert hang_budget_s(watch, Carry(longest_gap_s=10.0), learn_factor=0.0, **common) == 600.0


def test_a_stop_while_ending_a_hung_attempt_exits_and_keeps_the_cause() -> None:
    replay = running()
    replay.advance(600.0)
    fire_liveness(replay)
    actions = replay.send(StopRequested("SIGTERM received"))
    assert replay.state.phase is Phase.STOPPING
    assert not of_type(actions, StopTrainer)  # the stop under way goes on
    end = ended_with(replay)
    assert end.cause is Cause.HANG
    assert replay.state.phase is Phase.STOPPED


def test_signals_of_an_older_attempt_are_ignored() -> None:
    replay = running()
    assert replay.send(Progress(0, "heartbeat", position=1, nonfinite=True)) == []
    assert replay.send(TimerFired(Timer.LIVENESS, 0)) == []
    assert replay.state.phase is Phase.RUNNING


# --- NaN ---------------------------------------------------------------------------------


def test_a_nan_reading_rolls_back_below_where_it_began() -> None:
    replay = running(replace(WATCHED, nan_remedy=LOWER_LR))
    replay.send(CheckpointVerified(500))
    replay.send(Progress(1, "output", position=505, nonfinite=False))
    actions = replay.send(Progress(1, "output", position=510, nonfinite=True, line="loss=nan"))
    assert replay.state.phase is Phase.ENDING
    assert "rolling back below step 510" in of_type(actions, Note)[0].message
    replay.send(CheckpointVerified(600))  # saved after the NaN began: no progress, moved aside
    assert replay.state.best_step == 500
    end = ended_with(replay)
    assert end.cause is Cause.NAN
    assert replay.state.phase is Phase.BACKOFF
    replay.send(TimerFired(Timer.RELAUNCH, 1), at=replay.state.relaunch_at)
    assert of_type(replay.actions, Prepare)[-1].below_step == 510
    replay.send(Prepared(2, resume_step=500))
    assert of_type(replay.actions, Launch)[-1].remedies == (LOWER_LR,)
    assert replay.state.carry.nan_below is None
    assert replay.state.best_step == 500


def test_the_tolerance_counts_consecutive_bad_readings_only() -> None:
    replay = running(replace(WATCHED, nan_tolerance=3))
    for finite in (False, False, True, False, False):
        replay.send(Progress(1, "output", nonfinite=not finite))
    assert replay.state.phase is Phase.RUNNING
    replay.send(Progress(1, "output", position=80, nonfinite=True))
    assert replay.state.phase is Phase.ENDING
    assert replay.state.carry.nan_below is not None


def test_without_a_position_the_bound_is_past_the_newest_verified_step() -> None:
    assert nan_bound(Watch(best_at_first_bad=700), comparable=True) == 701
    assert nan_bound(Watch(), comparable=True) == 0
    assert nan_bound(Watch(first_bad_position=640, best_at_first_bad=700), comparable=True) == 640
    assert nan_bound(Watch(first_bad_position=640), comparable=False) is None
    replay = running()
    replay.send(Progress(1, "output", position=40))
    replay.send(Progress(1, "metrics", nonfinite=True))  # a reading without a position
    assert replay.state.carry.nan_below == 40  # the newest position read before it


def test_rollbacks_are_bounded_and_reset_once_the_run_gets_past_the_bad_step() -> None:
    policy = replace(WATCHED, max_nan_rollbacks=1)
    replay = running(policy)
    replay.send(CheckpointVerified(100))
    replay.send(Progress(1, "output", position=150, nonfinite=True))
    ended_with(replay)
    replay.send(TimerFired(Timer.RELAUNCH, 1), at=replay.state.relaunch_at)
    replay.send(Prepared(2, resume_step=100))
    replay.send(Launched(2, pid=11))
    replay.send(CheckpointVerified(160))  # got past 150: the count starts again
    assert replay.state.carry.nan_rollbacks == 0
    replay.send(Progress(2, "output", position=170, nonfinite=True))
    ended_with(replay)
    assert replay.state.phase is Phase.BACKOFF
    replay.send(TimerFired(Timer.RELAUNCH, 2), at=replay.state.relaunch_at)
    replay.send(Prepared(3, resume_step=160))
    replay.send(Launched(3, pid=12))
    replay.send(Progress(3, "output", position=165, nonfinite=True))
    actions = replay.send(Exited(3, ExitStatus(signal=15)))
    assert replay.state.phase is Phase.GAVE_UP
    assert replay.state.exit_code == EXIT_GAVE_UP
    assert "NaN/Inf 2 times" in of_type(actions, Note)[-1].message


def test_counters_that_restart_every_launch_roll_back_nothing_by_step() -> None:
    replay = running(replace(WATCHED, positions_comparable=False))
    replay.send(Progress(1, "output", position=10, nonfinite=True))
    assert replay.state.phase is Phase.ENDING
    ended_with(replay)
    replay.fire_relaunch()
    assert of_type(replay.actions, Prepare)[-1].below_step is None


# --- out of memory -------------------------------------------------------------------------


def test_a_cuda_oom_climbs_the_remedy_ladder_one_rung_per_end() -> None:
    replay = running(replace(WATCHED, oom_cuda_remedies=(EXPANDABLE, SMALLER)))
    replay.send(TrainerSaid(1, Said.OOM, "torch.OutOfMemoryError: CUDA out of memory."))
    end = ended_with(replay, CRASH)
    assert end.cause is Cause.OOM_CUDA
    assert [n.kind for n in of_type(replay.actions, Note)].count("remedy") == 1
    launches = []
    for attempt in (2, 3, 4):
        replay.fire_relaunch()
        launches.append(of_type(replay.actions, Launch)[-1])
        replay.send(Launched(attempt, pid=10 + attempt))
        replay.send(TrainerSaid(attempt, Said.OOM, "CUDA out of memory"))
        ended_with(replay, CRASH)
    assert [launch.remedies for launch in launches] == [
        (EXPANDABLE,),
        (EXPANDABLE, SMALLER),
        (EXPANDABLE, SMALLER),
    ]


def test_a_host_oom_kill_is_its_own_cause() -> None:
    replay = running()
    actions = replay.send(Exited(1, ExitStatus(signal=9), oom_killed=True))
    assert of_type(actions, RecordAttemptEnd)[0].cause is Cause.OOM_HOST


def test_an_oom_the_trainer_survives_is_forgotten() -> None:
    replay = running()
    replay.send(TrainerSaid(1, Said.OOM, "CUDA out of memory; skipping batch"))
    notes = replay.send(Progress(1, "output", position=3))
    assert [n.kind for n in of_type(notes, Note)] == ["trainer_went_on"]
    assert ended_with(replay, CRASH).cause is Cause.CRASH


# --- silent fresh starts ----------------------------------------------------------------------


def test_a_first_step_far_below_the_resumed_one_is_a_silent_reset_then_a_give_up() -> None:
    replay = running(resume_step=5000)
    actions = replay.send(Progress(1, "output", position=20))
    assert replay.state.phase is Phase.ENDING
    assert "step 20 although it should resume from verified step 5000" in of_type(actions, Note)[0].message
    assert ended_with(replay).cause is Cause.SILENT_RESET
    assert replay.state.phase is Phase.BACKOFF
    replay.send(TimerFired(Timer.RELAUNCH, 1), at=replay.state.relaunch_at)
    replay.send(Prepared(2, resume_step=5000))
    replay.send(Launched(2, pid=11))
    replay.send(TrainerSaid(2, Said.FRESH_START, "start training from epoch 1"))
    actions = replay.send(Exited(2, ExitStatus(signal=15)))
    assert replay.state.phase is Phase.GAVE_UP
    assert "silent-reset" in of_type(actions, Note)[-1].message


def test_a_proper_resume_clears_the_count_and_later_positions_are_not_checked() -> None:
    replay = running(resume_step=5000)
    replay.send(Progress(1, "output", position=20))
    ended_with(replay)
    replay.send(TimerFired(Timer.RELAUNCH, 1), at=replay.state.relaunch_at)
    replay.send(Prepared(2, resume_step=5000))
    replay.send(Launched(2, pid=11))
    replay.send(Progress(2, "output", position=5001))
    assert replay.state.carry.silent_resets == 0
    replay.send(Progress(2, "output", position=3))  # only the first position says where it started
    assert replay.state.phase is Phase.RUNNING


def test_a_trainer_that_resumes_at_its_epoch_start_is_judged_by_the_epoch() -> None:
    policy = replace(WATCHED, reset_epoch_offset=0)
    replay = Replay(policy=policy)
    replay.send(Boot())
    replay.send(Prepared(1, resume_step=1500, resume_epoch=1))
    replay.send(Launched(1, pid=10))
    replay.send(Progress(1, "output", position=0, epoch=1))  # epoch 1 resumes at step 0
    assert replay.state.phase is Phase.RUNNING
    replay = Replay(policy=policy)
    replay.send(Boot())
    replay.send(Prepared(1, resume_step=9000, resume_epoch=5))
    replay.send(Launched(1, pid=10))
    replay.send(Progress(1, "output", position=8000))  # no epoch on this line: not judged
    assert replay.state.phase is Phase.RUNNING
    actions = replay.send(Progress(1, "output", epoch=1))
    assert replay.state.phase is Phase.ENDING
    assert (
        "epoch 1 although it should resume from verified step 9000 (epoch 5)"
        in of_type(actions, Note)[0].message
    )


def test_a_fresh_start_without_a_verified_state_is_only_noted() -> None:
    replay = running(resume_step=None)
    actions = replay.send(TrainerSaid(1, Said.FRESH_START, "start training from epoch 1"))
    assert [n.kind for n in of_type(actions, Note)] == ["trainer_fresh_start"]
    replay.send(Progress(1, "output", position=0))
    assert replay.state.phase is Phase.RUNNING


# --- the pure helpers ---------------------------------------------------------------------------


def test_remedies_replace_flag_values_or_append_them_and_set_the_environment() -> None:
    fix = Remedy("r", env=(("A", "1"),), args=(("--batch-size", "4"), ("--lr", "1e-5"), ("--fp16", "false")))
    argv, env = with_remedies(["train.py", "--batch-size", "16", "--lr=3e-4"], {"A": "0", "B": "2"}, [fix])
    assert argv == ["train.py", "--batch-size", "4", "--lr=1e-5", "--fp16", "false"]
    assert env == {"A": "1", "B": "2"}


def test_the_carry_survives_a_round_trip_and_unknown_keys() -> None:
    carry = Carry(longest_gap_s=2.5, nan_below=40, nan_rollbacks=2, oom_cuda_level=1, silent_resets=1)
    assert Carry.from_json(carry.to_json()) == carry
    assert Carry.from_json('{"nan_rollbacks": 1, "from_the_future": true}') == Carry(nan_rollbacks=1)
    assert Carry.from_json(None) == Carry()


def test_the_bound_is_where_the_streak_began_not_where_it_was_noticed() -> None:
    replay = running(replace(WATCHED, nan_tolerance=3))
    replay.send(CheckpointVerified(1000))
    replay.send(Progress(1, "metrics", nonfinite=True))  # no position: best verified is 1000
    replay.send(CheckpointVerified(1100))  # saved after the loss went bad
    replay.send(Progress(1, "metrics", nonfinite=True))
    replay.send(Progress(1, "metrics", nonfinite=True))
    assert replay.state.carry.nan_below == 1001


def test_bad_again_before_getting_past_goes_back_further_than_the_resumed_state() -> None:
    replay = running()
    replay.send(CheckpointVerified(500))
    replay.send(CheckpointVerified(600))
    replay.send(Progress(1, "output", position=650, nonfinite=True))
    ended_with(replay)
    replay.send(TimerFired(Timer.RELAUNCH, 1), at=replay.state.relaunch_at)
    replay.send(Prepared(2, resume_step=600))
    replay.send(Launched(2, pid=11))
    replay.send(Progress(2, "output", position=640, nonfinite=True))
    assert replay.state.carry.nan_below == 600  # 600 itself is suspect now


def test_a_stable_run_resets_rollbacks_where_steps_restart_every_launch() -> None:
    replay = running(replace(WATCHED, positions_comparable=False))
    replay.send(Progress(1, "output", position=10, nonfinite=True))
    ended_with(replay)
    assert replay.state.carry.nan_rollbacks == 1
    replay.send(TimerFired(Timer.RELAUNCH, 1), at=replay.state.relaunch_at)
    replay.send(Prepared(2))
    replay.send(Launched(2, pid=11))
    replay.advance(WATCHED.stable_after_s)
    replay.send(TimerFired(Timer.STABLE, 2))
    assert replay.state.carry.nan_rollbacks == 0


def test_a_hang_after_the_completion_line_is_a_completion() -> None:
    replay = running()
    replay.send(TrainerSaid(1, Said.COMPLETED, "training done"))
    replay.advance(600.0)
    fire_liveness(replay)  # it hung in its teardown
    assert replay.state.phase is Phase.ENDING
    assert ended_with(replay).cause is Cause.COMPLETED
    assert replay.state.phase is Phase.COMPLETED


def test_a_hang_after_a_fatal_line_gives_up_and_after_an_oom_line_is_that_oom() -> None:
    replay = running()
    replay.send(TrainerSaid(1, Said.FATAL, "ValueError: port 80000", "VITS hard-codes the port"))
    replay.advance(600.0)
    fire_liveness(replay)
    assert ended_with(replay).cause is Cause.NOT_RETRYABLE
    assert replay.state.phase is Phase.GAVE_UP
    replay = running(replace(WATCHED, oom_cuda_remedies=(EXPANDABLE,)))
    replay.send(TrainerSaid(1, Said.OOM, "torch.OutOfMemoryError: CUDA out of memory."))
    replay.advance(600.0)
    fire_liveness(replay)
    assert ended_with(replay).cause is Cause.OOM_CUDA
    assert replay.state.carry.oom_cuda_level == 1


# --- signs of life dated by when they were given ---------------------------------------------


def test_a_checkpoint_is_a_sign_of_life_when_it_was_written_not_when_it_landed() -> None:
    """A hang right after a save: the landing is reported quiet_s (and a verification)
    after the file's last write. The budget runs from the write."""
    policy = replace(WATCHED, hang_timeout_s=3.0)
    replay = running(policy)
    start = replay.now
    replay.send(Progress(1, "output", position=1), at=start + 1)  # a check is due at +4
    replay.send(Progress(1, "checkpoint", at=start + 1.5), at=start + 3.5)  # written at +1.5
    actions = replay.send(TimerFired(Timer.LIVENESS, 1), at=start + 4)
    assert replay.state.phase is Phase.RUNNING
    assert liveness_timers(actions) == [pytest.approx(0.5)]  # +1.5 + 3, not +3.5 + 3
    replay.send(TimerFired(Timer.LIVENESS, 1), at=start + 4.5)
    assert replay.state.phase is Phase.ENDING
    assert replay.state.ending is Cause.HANG


def test_a_file_written_before_the_attempt_began_is_no_sign_of_its_life() -> None:
    replay = running(replace(WATCHED, hang_timeout_s=3.0))
    actions = replay.send(Progress(1, "checkpoint", at=replay.now - 100), at=replay.now + 1)
    assert actions == []
    assert replay.state.watch.last_progress_at is None, "the startup budget still applies"


def test_a_sign_older_than_the_newest_never_moves_the_clock_back() -> None:
    replay = running(replace(WATCHED, hang_timeout_s=3.0))
    replay.send(Progress(1, "output", position=1), at=replay.now + 2)
    newest = replay.state.watch.last_progress_at
    replay.send(Progress(1, "checkpoint", at=replay.now - 1), at=replay.now + 0.5)
    assert replay.state.watch.last_progress_at == newest


# --- every note names the attempt it is about -------------------------------------------------


def test_with_zero_backoff_the_failure_is_noted_under_the_attempt_that_failed() -> None:
    policy = replace(POLICY, backoff=replace(POLICY.backoff, initial_s=0.0, max_s=0.0))
    replay = Replay(policy=policy)
    replay.send(Boot())
    replay.send(Prepared(1))
    replay.send(Launched(1, pid=10))
    actions = replay.send(Exited(1, CRASH))
    assert replay.state.attempt == 2, "the same decision starts attempt 2"
    crashed = [n for n in of_type(actions, Note) if n.kind == "crashed"]
    assert [(n.attempt, "attempt 1 failed" in n.message) for n in crashed] == [(1, True)]
    assert all(isinstance(n, Note) and n.attempt is not None for n in of_type(actions, Note))


# --- fresh starts told by the first epoch ------------------------------------------------------


@pytest.mark.parametrize(
    ("resumed", "first", "reset"), [(5, 1, True), (5, 6, False), (1, 1, True), (1, 2, False)]
)
def test_a_trainer_that_resumes_in_the_next_epoch_is_told_by_it(
    resumed: int, first: int, reset: bool
) -> None:
    """Applio and s2 resume at the epoch after the saved one; a fresh start (silent in
    Applio without pretrained weights) reports epoch 1, even when it resumed from 1."""
    policy = replace(WATCHED, reset_epoch_offset=1, unit="epoch")
    replay = Replay(policy=policy)
    replay.send(Boot())
    replay.send(Prepared(1, resume_step=resumed, resume_epoch=resumed))
    replay.send(Launched(1, pid=10))
    actions = replay.send(Progress(1, "output", position=first, epoch=first))
    assert (replay.state.phase is Phase.ENDING) == reset
    if reset:
        message = of_type(actions, Note)[0].message
        assert f"reports epoch {first} although it should resume from verified epoch {resumed}" in message
