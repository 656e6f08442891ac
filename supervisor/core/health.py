"""Pure pieces of the health decisions the core makes while an attempt runs: what the
detectors know of the current attempt (`Watch`), what carries across attempts and
supervisor restarts (`Carry`), the hang budget, the NaN rollback bound, and the remedies
a relaunch runs with. No I/O, no clock: `now` always comes in.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class Remedy:
    """Environment and argument overrides a relaunch runs with (e.g. after an OOM)."""

    name: str  # how the ledger names it, e.g. "oom-cuda remedy 1"
    env: tuple[tuple[str, str], ...] = ()
    # (flag, value): the flag's value is replaced where the command has it, else both are appended.
    args: tuple[tuple[str, str], ...] = ()

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in self.env] + [f"{flag} {value}" for flag, value in self.args]
        return f"{self.name} ({', '.join(parts) or 'no overrides'})"


@dataclass(frozen=True)
class Watch:
    """What the detectors know of the current attempt (a new one at every launch)."""

    armed: bool = False  # hang detection is on for this attempt
    check_at: float | None = None  # when the earliest pending liveness check fires
    last_progress_at: float | None = None  # loop time of the newest sign of progress
    last_sign: str = ""  # what that sign was, for the hang message
    position: int | None = None  # newest position read (in the unit of checkpoint steps)
    bad_readings: int = 0  # consecutive readings with a non-finite loss
    # Where the current streak of bad readings began: the reading's own position, else the
    # newest one read before it (a lower bound: the rollback errs towards older states).
    first_bad_position: int | None = None
    first_bad_line: str = ""
    best_at_first_bad: int | None = None  # the newest verified step when the streak began
    oom_line: str | None = None  # the trainer printed a CUDA out-of-memory error
    resume_step: int | None = None  # where the preparation made the trainer's rule land
    resume_epoch: int | None = None  # that state's epoch, where known
    reset_checked: bool = False  # the first position (or epoch) was compared with the resume
    # The trainer said it saved, and no checkpoint has landed since (the first such line).
    save_said_at: float | None = None
    save_said_line: str = ""
    save_warned: bool = False  # said once per attempt


@dataclass(frozen=True)
class Carry:
    """What outlives an attempt, and a supervisor restart (kept in the ledger)."""

    longest_gap_s: float | None = None  # the longest interval between signs of progress
    nan_below: int | None = None  # a pending rollback: the next preparation resumes below this
    nan_rolled_back_at: int | None = None  # the bound of the last rollback
    nan_rollbacks: int = 0  # rollbacks since the run last got past a bound
    nan_remedy: bool = False  # NaN relaunches run with the configured remedy
    oom_cuda_level: int = 0  # how many rungs of the CUDA OOM ladder are applied
    oom_host_level: int = 0
    silent_resets: int = 0  # consecutive attempts that started over despite a verified state

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> Carry:
        if not text:
            return cls()
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def hang_budget_s(
    watch: Watch,
    carry: Carry,
    *,
    timeout_s: float,
    startup_timeout_s: float,
    learn_factor: float,
    learn_min_s: float,
) -> float:
    """The time allowed since the last sign of progress (since launch: the startup budget).
    A learned budget is a multiple of the longest interval seen, never above timeout_s."""
    if watch.last_progress_at is None:
        return startup_timeout_s
    if learn_factor > 0 and carry.longest_gap_s is not None:
        return min(timeout_s, max(learn_min_s, learn_factor * carry.longest_gap_s))
    return timeout_s


def far_below(position: int, resume_step: int) -> bool:
    """A first position this far below the resumed step means the trainer started over
    (a resume shows the resumed step or just past it; a fresh start shows ~0)."""
    return position * 2 < resume_step


def nan_bound(watch: Watch, comparable: bool) -> int | None:
    """The step the rollback must stay below: where the bad readings began when that is
    known, else the newest verified step when they began, + 1 (what was verified before
    the loss went bad is kept, anything newer is not). None where steps say nothing
    across attempts."""
    if not comparable:
        return None
    if watch.first_bad_position is not None:
        return watch.first_bad_position
    return watch.best_at_first_bad + 1 if watch.best_at_first_bad is not None else 0


def remedies(
    carry: Carry,
    cuda: Sequence[Remedy],
    host: Sequence[Remedy],
    nan: Remedy | None,
) -> tuple[Remedy, ...]:
    """The remedies the next launch runs with: the rungs of each OOM ladder reached so far
    (cumulative), then the NaN remedy once a NaN rollback happened."""
    chosen = [*cuda[: carry.oom_cuda_level], *host[: carry.oom_host_level]]
    if carry.nan_remedy and nan is not None:
        chosen.append(nan)
    return tuple(chosen)


def with_remedies(
    command: Sequence[str], env: dict[str, str], chosen: Sequence[Remedy]
) -> tuple[list[str], dict[str, str]]:
    """The command and environment a launch runs with, remedies applied in order."""
    argv, env = list(command), dict(env)
    for remedy in chosen:
        env.update(remedy.env)
        for flag, value in remedy.args:
            argv = _set_flag(argv, flag, value)
    return argv, env


def _set_flag(argv: list[str], flag: str, value: str) -> list[str]:
    """`--flag value` or `--flag=value` gets the new value; a command without the flag
    gets both appended."""
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return [*argv[: i + 1], value, *argv[i + 2 :]]
        if arg.startswith(flag + "="):
            return [*argv[:i], f"{flag}={value}", *argv[i + 1 :]]
    return [*argv, flag, value]
