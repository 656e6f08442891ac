"""Replaying event histories through the core on a fake clock: the policy, the replay, and small selectors."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from supervisor.core import (
    Action,
    Boot,
    Event,
    Exited,
    ExitStatus,
    Launched,
    Phase,
    Policy,
    Prepared,
    State,
    Timer,
    TimerFired,
    decide,
)
from supervisor.core.backoff import Backoff

POLICY = Policy(
    backoff=Backoff(initial_s=10.0, max_s=100.0, factor=2.0, jitter=0.0),
    stable_after_s=300.0,
    max_attempts_without_progress=4,
    stop_signal="SIGTERM",
    stop_grace_s=30.0,
)
CRASH = ExitStatus(code=1)


@dataclass
class Replay:
    """Feeds events to the core on a fake clock and keeps every action."""

    policy: Policy = POLICY
    state: State = field(default_factory=State)
    now: float = 1000.0
    actions: list[Action] = field(default_factory=list)

    def send(self, event: Event, at: float | None = None) -> list[Action]:
        if at is not None:
            self.now = at
        self.state, actions = decide(self.state, event, self.now, self.policy)
        self.actions += actions
        return actions

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def run_attempt(self, lasting: float, status: ExitStatus = CRASH) -> list[Action]:
        """Confirm the pending launch, let it run `lasting` seconds, then end it."""
        if self.state.phase is Phase.PREPARING:
            self.send(Prepared(self.state.attempt))
        attempt = self.state.attempt
        self.send(Launched(attempt, pid=100 + attempt))
        self.advance(lasting)
        if lasting >= self.policy.stable_after_s:
            self.send(TimerFired(Timer.STABLE, attempt))
        return self.send(Exited(attempt, status))

    def fire_relaunch(self) -> list[Action]:
        """The backoff ends; the preparation succeeds. Returns both decisions' actions."""
        assert self.state.phase is Phase.BACKOFF
        assert self.state.relaunch_at is not None
        actions = self.send(TimerFired(Timer.RELAUNCH, self.state.attempt), at=self.state.relaunch_at)
        return actions + self.send(Prepared(self.state.attempt))


def of_type(actions: list[Action], kind: type) -> list:  # type: ignore[type-arg]
    return [a for a in actions if isinstance(a, kind)]


def booted(policy: Policy = POLICY, **state: object) -> Replay:
    replay = Replay(policy=policy, state=replace(State(), **state))  # type: ignore[arg-type]
    replay.send(Boot())
    replay.send(Prepared(replay.state.attempt))
    return replay
