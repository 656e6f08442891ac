"""The core on replayed histories: a save the trainer announces must land, and a finished
run's checkpoint state is settled before the exit."""

from __future__ import annotations

from dataclasses import replace

from supervisor.core import (
    EXIT_OK,
    Exited,
    ExitStatus,
    Finish,
    Launched,
    Note,
    Phase,
    Prepare,
    Prepared,
    PrepareFailed,
    Progress,
    StartTimer,
    StopRequested,
    Timer,
    TimerFired,
    TrainerSaid,
)
from tests.support.replay import POLICY, Replay, booted, of_type
from trainer_adapters.base import Said

WATCHED = replace(POLICY, checkpoint_dir="ckpts/voice", save_landing_grace_s=120.0)
SAVED = "Saved last checkpoint at update 5000"


def running(policy=WATCHED) -> Replay:  # type: ignore[no-untyped-def]
    replay = booted(policy)
    replay.send(Launched(1, pid=101))
    return replay


def notes(actions: list[object], kind: str) -> list[Note]:
    return [a for a in of_type(actions, Note) if a.kind == kind]  # type: ignore[arg-type]


def test_a_save_that_never_lands_is_an_error_once_the_grace_is_over() -> None:
    replay = running()
    (timer,) = of_type(replay.send(TrainerSaid(1, Said.SAVED, SAVED)), StartTimer)
    assert timer.timer is Timer.SAVE_LANDED
    assert timer.delay_s == WATCHED.save_landing_grace_s
    replay.advance(30)
    assert replay.send(TrainerSaid(1, Said.SAVED, "Saved last checkpoint at update 6000")) == []
    replay.advance(timer.delay_s - 30)
    (warning,) = notes(replay.send(TimerFired(Timer.SAVE_LANDED, 1)), "saves_not_landing")
    assert warning.level == "error"
    assert SAVED in warning.message
    assert "ckpts/voice" in warning.message
    # Said once per attempt.
    replay.send(TrainerSaid(1, Said.SAVED, SAVED))
    replay.advance(timer.delay_s)
    assert replay.send(TimerFired(Timer.SAVE_LANDED, 1)) == []


def test_a_checkpoint_landing_answers_the_announcement() -> None:
    replay = running()
    replay.send(TrainerSaid(1, Said.SAVED, SAVED))
    replay.advance(5)
    replay.send(Progress(1, "checkpoint", line="ckpts/voice/model_last.pt"))
    replay.advance(WATCHED.save_landing_grace_s)
    assert replay.send(TimerFired(Timer.SAVE_LANDED, 1)) == []
    # The next announcement starts a grace period of its own.
    assert of_type(replay.send(TrainerSaid(1, Said.SAVED, SAVED)), StartTimer)


def test_a_stale_timer_of_an_answered_announcement_does_not_fire_for_a_newer_one() -> None:
    replay = running()
    replay.send(TrainerSaid(1, Said.SAVED, SAVED))
    replay.advance(100)
    replay.send(Progress(1, "checkpoint", line="ckpts/voice/model_last.pt"))
    replay.send(TrainerSaid(1, Said.SAVED, SAVED))  # at 100: due at 220
    replay.advance(20)  # 120: the first timer
    assert replay.send(TimerFired(Timer.SAVE_LANDED, 1)) == []
    replay.advance(100)  # 220: the second
    assert notes(replay.send(TimerFired(Timer.SAVE_LANDED, 1)), "saves_not_landing")


def test_without_a_checkpoint_directory_announcements_start_nothing() -> None:
    replay = running(POLICY)
    assert replay.send(TrainerSaid(1, Said.SAVED, SAVED)) == []


def test_a_finished_run_is_settled_before_it_completes() -> None:
    replay = running()
    actions = replay.send(Exited(1, ExitStatus(code=0)))
    assert replay.state.phase is Phase.FINISHING
    assert Prepare(1, final=True) in actions
    assert not of_type(actions, Finish)
    # A stop meanwhile waits for the settling: no trainer is left to stop.
    assert notes(replay.send(StopRequested("SIGTERM")), "stopping")
    assert replay.state.phase is Phase.FINISHING
    done = replay.send(Prepared(1, "resume from step 40 (model_last.pt); restore 1: model_last.pt", 40))
    assert replay.state.phase is Phase.COMPLETED
    (settled,) = notes(done, "final_state")
    assert "restore 1: model_last.pt" in settled.message
    assert done[-1] == Finish(EXIT_OK)


def test_a_final_state_that_cannot_be_settled_is_said_loudly() -> None:
    replay = running()
    replay.send(Exited(1, ExitStatus(code=0)))
    done = replay.send(PrepareFailed(1, "model_last.pt is torn and no verified copy is kept"))
    (problem,) = notes(done, "final_state_unsettled")
    assert problem.level == "error"
    assert "no verified copy" in problem.message
    assert replay.state.phase is Phase.COMPLETED
    assert done[-1] == Finish(EXIT_OK)


def test_a_finished_run_that_leaves_no_verified_checkpoint_is_said_loudly() -> None:
    replay = running()
    replay.send(Exited(1, ExitStatus(code=0)))
    done = replay.send(Prepared(1, "no verified checkpoint: the trainer starts from scratch", None))
    assert notes(done, "final_state_unsettled")


def test_without_a_checkpoint_directory_completion_is_at_once() -> None:
    replay = running(POLICY)
    actions = replay.send(Exited(1, ExitStatus(code=0)))
    assert replay.state.phase is Phase.COMPLETED
    assert actions[-1] == Finish(EXIT_OK)


def test_a_start_after_a_cut_short_settling_settles_and_never_relaunches() -> None:
    from supervisor.core import Boot, Launch, State

    replay = Replay(policy=WATCHED, state=State(attempt=3))
    actions = replay.send(Boot(finishing=True))
    assert replay.state.phase is Phase.FINISHING
    assert Prepare(3, final=True) in actions
    done = replay.send(Prepared(3, "resume from step 40 (model_last.pt)", 40))
    assert replay.state.phase is Phase.COMPLETED
    assert not of_type(replay.actions, Launch)
    assert done[-1] == Finish(EXIT_OK)
