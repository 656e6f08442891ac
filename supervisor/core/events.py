"""What the edges report to the core: the events `decide` takes."""

from __future__ import annotations

import signal as _signal
from dataclasses import dataclass

from supervisor.core.phases import Timer
from supervisor.core.said import Said as Said


@dataclass(frozen=True)
class ExitStatus:
    code: int | None = None
    signal: int | None = None

    @classmethod
    def from_returncode(cls, returncode: int) -> ExitStatus:
        """Popen's convention: negative means killed by that signal."""
        return cls(signal=-returncode) if returncode < 0 else cls(code=returncode)

    def describe(self) -> str:
        if self.signal is not None:
            try:
                return f"killed by {_signal.Signals(self.signal).name}"
            except ValueError:
                return f"killed by signal {self.signal}"
        return f"exit code {self.code}"


# --- events -----------------------------------------------------------------------


@dataclass(frozen=True)
class Boot:
    """The supervisor starts. `unfinished` is set when the ledger shows an attempt that
    was still running when the previous supervisor died; `unfinished_stable` says whether
    that attempt had already run stably."""

    unfinished: bool = False
    unfinished_stable: bool = False
    # The ledger says the run completed (and `run --again` was not given): relaunching a
    # finished trainer would train more, or do nothing and look like a crash.
    completed: bool = False
    # The trainer had finished and the previous supervisor died settling the final state.
    finishing: bool = False


@dataclass(frozen=True)
class Launched:
    attempt: int
    pid: int


@dataclass(frozen=True)
class LaunchFailed:
    attempt: int
    reason: str


@dataclass(frozen=True)
class Exited:
    """The attempt is over: its leader exited and nothing of its session is left.
    `at` is when the leader exited (the sweep of leftovers may take a while after);
    `before_stop` says it exited on its own before any stop signal was sent."""

    attempt: int
    status: ExitStatus
    detail: str = ""
    at: float | None = None
    before_stop: bool = False
    oom_killed: bool = False  # the kernel's OOM killer killed a process of the attempt


@dataclass(frozen=True)
class Reclaimed:
    """Nothing of the interrupted attempt is left running."""

    attempt: int


@dataclass(frozen=True)
class ConfigChange:
    """The trainer's config files differ from their fingerprint at attempt `since`."""

    since: int
    summary: str


@dataclass(frozen=True)
class Prepared:
    """The run directory is ready, and what the checks before a launch found: facts,
    which the core weighs (a config change may refuse the launch; a GPU still held by the
    last attempt's processes past the wait gets them killed)."""

    attempt: int
    summary: str = ""
    resume_step: int | None = None  # the verified step the trainer's rule lands on (None: none)
    resume_epoch: int | None = None  # that state's epoch, where its files say
    config_change: ConfigChange | None = None
    gpu_held: str | None = None  # how the GPU is still held by the last attempt, past the wait


@dataclass(frozen=True)
class PrepareFailed:
    attempt: int
    reason: str
    retry: bool = False  # it may work later by itself (a full disk, a file that could not move)


@dataclass(frozen=True)
class CheckpointVerified:
    step: int


@dataclass(frozen=True)
class TrainerSaid:
    """A line of the trainer's output that matters to the decision (see
    Said): `fatal`, `completed`, `loaded` or `fresh_start`."""

    attempt: int
    said: Said
    line: str
    explain: str = ""


@dataclass(frozen=True)
class Progress:
    """A sign that the attempt makes progress: an advancing line of output, a heartbeat,
    a checkpoint landing. `position` is in the unit of verified checkpoint steps, where
    known; `nonfinite` says whether the losses it carries were not all finite (None: it
    carries no loss)."""

    attempt: int
    source: str  # "output", "heartbeat", "checkpoint", "metrics"
    position: int | None = None
    nonfinite: bool | None = None
    line: str = ""
    epoch: int | None = None
    at: float | None = None  # when the sign was given (a checkpoint's last write), if before now


@dataclass(frozen=True)
class StopRequested:
    reason: str


@dataclass(frozen=True)
class TimerFired:
    timer: Timer
    attempt: int


Event = (
    Boot
    | Prepared
    | PrepareFailed
    | Launched
    | LaunchFailed
    | Exited
    | Reclaimed
    | CheckpointVerified
    | TrainerSaid
    | Progress
    | StopRequested
    | TimerFired
)
