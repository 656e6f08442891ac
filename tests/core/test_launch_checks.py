"""What the checks before a launch found (a changed trainer config, a GPU still held by
the last attempt), weighed by the core: replayed on a fake clock."""

from __future__ import annotations

from dataclasses import replace

from supervisor.core import (
    EXIT_GAVE_UP,
    Boot,
    ConfigChange,
    Finish,
    KillLeftovers,
    Launch,
    Note,
    Phase,
    Prepared,
    StopRequested,
    Timer,
    TimerFired,
)
from tests.support.replay import POLICY, Replay, of_type

CHANGE = ConfigChange(since=1, summary="config.json: train.learning_rate 0.0002 -> 0.002")
HELD = "the GPU is still held by pid 4242 (1024 MiB) after 60s"


def preparing(refuse: bool) -> Replay:
    replay = Replay(policy=replace(POLICY, refuse_config_change=refuse))
    replay.send(Boot())
    replay.run_attempt(lasting=5.0)  # attempt 1 crashes: attempt 2 waits out its backoff
    replay.advance(60.0)
    assert replay.state.relaunch_at is not None
    replay.send(TimerFired(Timer.RELAUNCH, replay.state.attempt), at=replay.state.relaunch_at)
    assert replay.state.phase is Phase.PREPARING
    return replay


def test_a_changed_config_refuses_the_launch_where_the_policy_says_refuse() -> None:
    replay = preparing(refuse=True)
    actions = replay.send(Prepared(replay.state.attempt, config_change=CHANGE))
    assert of_type(actions, Launch) == []
    assert replay.state.phase is Phase.GAVE_UP
    assert of_type(actions, Finish) == [Finish(EXIT_GAVE_UP)]
    drift = [n for n in of_type(actions, Note) if n.kind == "config_drift"]
    assert [(n.level, CHANGE.summary in n.message) for n in drift] == [("error", True)]
    (gave_up,) = [n for n in of_type(actions, Note) if n.kind == "gave_up"]
    assert f"since attempt {CHANGE.since}" in gave_up.message
    assert "--accept-config-change" in gave_up.message
    assert replay.state.attempt == 1  # the refused attempt was never launched


def test_a_changed_config_is_a_warning_where_it_may_change() -> None:
    replay = preparing(refuse=False)
    attempt = replay.state.attempt
    actions = replay.send(Prepared(attempt, config_change=CHANGE))
    assert [a.attempt for a in of_type(actions, Launch)] == [attempt]
    (drift,) = [n for n in of_type(actions, Note) if n.kind == "config_drift"]
    assert drift.level == "warning"
    assert CHANGE.summary in drift.message


def test_a_gpu_still_held_gets_the_leftovers_killed_before_the_relaunch() -> None:
    replay = preparing(refuse=False)
    actions = replay.send(Prepared(replay.state.attempt, gpu_held=HELD))
    kinds = [type(a) for a in actions if isinstance(a, KillLeftovers | Launch)]
    assert kinds == [KillLeftovers, Launch]  # killed first: the launch gets the GPU
    (note,) = [n for n in of_type(actions, Note) if n.kind == "gpu_not_released"]
    assert note.message.startswith(HELD)
    assert note.message.endswith("relaunching anyway")


def test_a_refused_launch_still_kills_what_holds_the_gpu() -> None:
    replay = preparing(refuse=True)
    actions = replay.send(Prepared(replay.state.attempt, config_change=CHANGE, gpu_held=HELD))
    assert of_type(actions, KillLeftovers) == [KillLeftovers()]
    assert of_type(actions, Launch) == []
    (note,) = [n for n in of_type(actions, Note) if n.kind == "gpu_not_released"]
    assert "relaunching" not in note.message


def test_a_stop_while_preparing_still_kills_what_holds_the_gpu() -> None:
    replay = preparing(refuse=False)
    replay.send(StopRequested("SIGTERM received"))
    actions = replay.send(Prepared(replay.state.attempt, config_change=CHANGE, gpu_held=HELD))
    assert replay.state.phase is Phase.STOPPED
    assert of_type(actions, KillLeftovers) == [KillLeftovers()]
    assert of_type(actions, Launch) == []
    kinds = {n.kind for n in of_type(actions, Note)}
    assert {"config_drift", "gpu_not_released"} <= kinds  # what the checks found is still said


def test_giving_up_while_preparing_still_kills_what_holds_the_gpu() -> None:
    """The last attempt crashed without progress; the give-up waits for the checkpoints to
    be settled (PREPARING), and must not leave the attempt's leftovers running."""
    policy = replace(POLICY, progress_from_checkpoints=True, max_attempts_without_progress=1)
    replay = Replay(policy=policy)
    replay.send(Boot())
    replay.run_attempt(lasting=5.0)
    assert replay.state.phase is Phase.PREPARING
    assert replay.state.give_up_pending
    actions = replay.send(Prepared(replay.state.attempt, gpu_held=HELD))
    assert replay.state.phase is Phase.GAVE_UP
    assert of_type(actions, KillLeftovers) == [KillLeftovers()]
    assert of_type(actions, Launch) == []
    (note,) = [n for n in of_type(actions, Note) if n.kind == "gpu_not_released"]
    assert "relaunching" not in note.message
    assert of_type(actions, Finish) == [Finish(EXIT_GAVE_UP)]


def test_nothing_found_launches_as_before() -> None:
    replay = preparing(refuse=True)
    actions = replay.send(Prepared(replay.state.attempt))
    assert len(of_type(actions, Launch)) == 1
    assert of_type(actions, KillLeftovers) == []
    assert [n for n in of_type(actions, Note) if n.kind in ("config_drift", "gpu_not_released")] == []
