"""The core on what the trainer printed: fatal errors, completion lines, resume words."""

from __future__ import annotations

from dataclasses import replace

from supervisor.core import (
    EXIT_GAVE_UP,
    EXIT_OK,
    Cause,
    Exited,
    ExitStatus,
    Finish,
    Launch,
    Launched,
    Note,
    Phase,
    Prepare,
    Progress,
    RecordAttemptEnd,
    StartTimer,
    StopRequested,
    TrainerSaid,
)
from tests.support.replay import CRASH, POLICY, booted, of_type
from trainer_adapters.base import Said

UNTRUSTED = replace(POLICY, exit_codes_trusted=False)
PORT = "port must have value from 0 to 65535 but was 80000."


def fatal(attempt: int = 1) -> TrainerSaid:
    return TrainerSaid(attempt, Said.FATAL, f"ValueError: {PORT}", "VITS hard-codes MASTER_PORT=80000")


def test_a_fatal_line_then_a_crash_gives_up_at_once_with_the_explanation() -> None:
    replay = booted()
    replay.send(Launched(1, pid=10))
    notes = replay.send(fatal())
    assert [n.kind for n in of_type(notes, Note)] == ["trainer_fatal"]
    actions = replay.send(Exited(1, CRASH))
    assert replay.state.phase is Phase.GAVE_UP
    assert replay.state.exit_code == EXIT_GAVE_UP
    (end,) = of_type(actions, RecordAttemptEnd)
    assert end.cause is Cause.NOT_RETRYABLE
    assert "MASTER_PORT" in end.detail
    assert PORT in end.detail
    assert of_type(actions, Finish) == [Finish(EXIT_GAVE_UP)]
    assert "restarting cannot fix it" in of_type(actions, Note)[-1].message


def test_without_the_fatal_line_the_same_crash_is_retried() -> None:
    replay = booted()
    replay.send(Launched(1, pid=10))
    replay.send(Exited(1, CRASH))
    assert replay.state.phase is Phase.BACKOFF


def test_a_stop_is_a_stop_even_after_a_fatal_line() -> None:
    replay = booted(POLICY)
    replay.send(Launched(1, pid=10))
    replay.send(fatal())
    replay.send(StopRequested("operator"))
    assert replay.state.phase is Phase.STOPPING
    replay.send(Exited(1, ExitStatus(signal=15)))
    assert replay.state.phase is Phase.STOPPED
    assert replay.state.last_cause is Cause.STOPPED


def test_a_fatal_line_from_an_attempt_that_then_exits_0_still_completes() -> None:
    replay = booted()
    replay.send(Launched(1, pid=10))
    replay.send(fatal())
    replay.send(Exited(1, ExitStatus(code=0)))
    assert replay.state.phase is Phase.COMPLETED


def test_a_stale_line_of_an_earlier_attempt_changes_nothing() -> None:
    replay = booted()
    replay.send(Launched(1, pid=10))
    replay.send(Exited(1, CRASH))
    replay.fire_relaunch()
    replay.send(Launched(2, pid=11))
    assert replay.send(fatal(attempt=1)) == []
    assert replay.state.fatal is None
    replay.send(Exited(2, CRASH))
    assert replay.state.phase is Phase.BACKOFF, "attempt 2 is retried: its own output was fine"


def test_an_attempt_that_died_on_its_own_after_a_fatal_line_keeps_that_cause_during_a_stop() -> None:
    replay = booted()
    replay.send(Launched(1, pid=10))
    replay.send(fatal())
    replay.send(StopRequested("operator"))
    actions = replay.send(Exited(1, CRASH, before_stop=True))
    assert replay.state.phase is Phase.STOPPED
    assert of_type(actions, RecordAttemptEnd)[0].cause is Cause.NOT_RETRYABLE


def test_an_attempt_that_finished_on_its_own_during_a_stop_completed() -> None:
    replay = booted(UNTRUSTED)
    replay.send(Launched(1, pid=10))
    replay.send(TrainerSaid(1, Said.COMPLETED, "Training has been successfully completed"))
    replay.send(StopRequested("operator"))
    actions = replay.send(Exited(1, ExitStatus(code=0), before_stop=True))
    assert of_type(actions, RecordAttemptEnd)[0].cause is Cause.COMPLETED


def test_untrusted_exit_codes_complete_only_after_the_completion_line() -> None:
    replay = booted(UNTRUSTED)
    replay.send(Launched(1, pid=10))
    replay.send(Exited(1, ExitStatus(code=0)))
    assert replay.state.phase is Phase.BACKOFF, "exit 0 alone says nothing"
    replay.fire_relaunch()
    replay.send(Launched(2, pid=11))
    said = replay.send(
        TrainerSaid(2, Said.COMPLETED, "Training has been successfully completed with 3 epoch")
    )
    assert [n.kind for n in of_type(said, Note)] == ["trainer_completed"]
    actions = replay.send(Exited(2, ExitStatus(code=0)))
    assert replay.state.phase is Phase.COMPLETED
    assert replay.state.exit_code == EXIT_OK
    assert of_type(actions, RecordAttemptEnd)[0].cause is Cause.COMPLETED


def test_untrusted_exit_codes_after_the_completion_line_complete_whatever_the_code() -> None:
    replay = booted(UNTRUSTED)
    replay.send(Launched(1, pid=10))
    replay.send(TrainerSaid(1, Said.COMPLETED, "done"))
    replay.send(Exited(1, ExitStatus(code=149)))
    assert replay.state.phase is Phase.COMPLETED


def test_trusted_exit_codes_are_believed_over_a_completion_line() -> None:
    replay = booted()
    replay.send(Launched(1, pid=10))
    replay.send(TrainerSaid(1, Said.COMPLETED, "training done"))
    replay.send(Exited(1, CRASH))
    assert replay.state.phase is Phase.BACKOFF
    actions = replay.fire_relaunch()
    assert Launch(2) in actions
    assert replay.state.completion_seen is False


def test_loaded_and_fresh_start_lines_are_noted_only() -> None:
    replay = booted()
    replay.send(Launched(1, pid=10))
    loaded = replay.send(TrainerSaid(1, Said.LOADED, "Loaded checkpoint 'logs/m/G_100.pth' (iteration 3)"))
    fresh = replay.send(TrainerSaid(1, Said.FRESH_START, "loaded pretrained s2G.pth"))
    assert [(n.kind, n.level) for n in loaded] == [("trainer_loaded", "info")]
    assert [(n.kind, n.level) for n in fresh] == [("trainer_fresh_start", "warning")]
    assert replay.state.phase is Phase.RUNNING
    assert not of_type(loaded + fresh, Prepare)
    assert not of_type(loaded + fresh, StartTimer)


def test_a_trainer_that_goes_on_after_a_fatal_line_is_retried_when_it_later_crashes() -> None:
    replay = booted()
    replay.send(Launched(1, pid=10))
    replay.send(fatal())
    notes = replay.send(Progress(1, "output", line="INFO:ljs:Train Epoch: 3 [42%]"))
    assert [n.kind for n in of_type(notes, Note)] == ["trainer_went_on"]
    assert replay.state.fatal is None
    replay.send(Exited(1, CRASH))
    assert replay.state.phase is Phase.BACKOFF
    # Progress without a fatal line before it calls for no action.
    replay.fire_relaunch()
    replay.send(Launched(2, pid=11))
    assert replay.send(Progress(2, "output", line="step 5")) == []
