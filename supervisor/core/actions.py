"""What the core asks the edges to do: the actions `decide` returns."""

from __future__ import annotations

from dataclasses import dataclass

from supervisor.core.events import ExitStatus
from supervisor.core.health import Remedy
from supervisor.core.phases import Cause, Timer
from supervisor.core.state import State

# --- actions ----------------------------------------------------------------------


@dataclass(frozen=True)
class Prepare:
    """Wait for pending verifications, plan the resume, prepare the run directory;
    report Prepared or PrepareFailed. `below_step`: a NaN rollback, resume below it.
    `final`: the run has finished; the directory is settled and no launch follows."""

    attempt: int
    below_step: int | None = None
    final: bool = False


@dataclass(frozen=True)
class Launch:
    attempt: int
    remedies: tuple[Remedy, ...] = ()  # overrides to launch with, in order


@dataclass(frozen=True)
class Reclaim:
    """Stop, with grace, whatever of `attempt` is still running (it was started by a
    supervisor that died); report Reclaimed when nothing is left."""

    attempt: int


@dataclass(frozen=True)
class StopTrainer:
    """Signal the trainer's whole process group; SIGKILL it after grace_s."""

    signal: str
    grace_s: float


@dataclass(frozen=True)
class KillTrainer:
    pass


@dataclass(frozen=True)
class KillLeftovers:
    """SIGKILL what is left of the last attempt's processes (they hold the GPU)."""


@dataclass(frozen=True)
class StartTimer:
    timer: Timer
    attempt: int
    delay_s: float


@dataclass(frozen=True)
class RecordAttemptEnd:
    attempt: int
    cause: Cause
    status: ExitStatus | None
    stable: bool
    detail: str = ""


@dataclass(frozen=True)
class Note:
    """Something worth a log line and a ledger event, about `attempt` (set by `decide`
    to the attempt the decision was about, when not set where the note is made)."""

    kind: str
    message: str
    level: str = "info"
    attempt: int | None = None


@dataclass(frozen=True)
class Finish:
    exit_code: int


Action = (
    Prepare
    | Launch
    | Reclaim
    | StopTrainer
    | KillTrainer
    | KillLeftovers
    | StartTimer
    | RecordAttemptEnd
    | Note
    | Finish
)
Decision = tuple[State, list[Action]]
