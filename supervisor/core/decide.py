"""The decision core: `decide(state, event, now, policy) -> (state, actions)`.

Pure: no I/O, no clock reads, no randomness. The daemon feeds it events and carries
out the actions it returns; tests replay event histories on a fake clock.

Phases and their transitions (every move is marked where it happens below):

    IDLE       --Boot--> PREPARING                   (counters come from the ledger)
    IDLE       --Boot(unfinished)--> RECLAIMING      (a trainer of a dead supervisor may live)
    IDLE       --Boot(completed)--> COMPLETED        (the run finished before: nothing to do)
    IDLE       --Boot(finishing)--> FINISHING        (it finished, and its settling was cut short)
    IDLE       --StopRequested--> STOPPED
    RECLAIMING --Reclaimed--> PREPARING | GAVE_UP
    RECLAIMING --StopRequested--> STOPPING
    PREPARING  --Prepared--> STARTING                (the run directory is ready: resume plan applied)
    PREPARING  --PrepareFailed--> GAVE_UP            (the trainer would not land on verified state)
    PREPARING  --PrepareFailed(retry)--> BACKOFF | PREPARING (zero backoff) | GAVE_UP
                                                     (a move that may work later: a full disk)
    PREPARING  --StopRequested--> STOPPING
    STARTING   --Launched--> RUNNING
    STARTING   --LaunchFailed--> BACKOFF | PREPARING (zero backoff) | GAVE_UP
    RUNNING    --Exited(0)--> COMPLETED              (when exit codes are trusted)
    RUNNING    --Exited, after a completion line--> COMPLETED
               (FINISHING first, where checkpoints are watched: the final state is settled)
    FINISHING  --Prepared | PrepareFailed--> COMPLETED  (a torn final file restored, or said loudly)
    FINISHING  --StopRequested--> FINISHING          (the settling is bounded; then exit)
    RUNNING    --Exited(failure), after a fatal line--> GAVE_UP  (restarting cannot fix it)
    RUNNING    --Exited(failure)--> BACKOFF | PREPARING (zero backoff) | GAVE_UP
    RUNNING    --TrainerSaid--> RUNNING              (fatal, OOM and completion lines are kept for the exit)
    RUNNING    --Progress--> RUNNING                 (liveness, position, the streak of bad losses)
    RUNNING    --Progress(non-finite loss x nan_tolerance)--> ENDING   (nan: roll back)
    RUNNING    --Progress far below the resumed step | TrainerSaid(fresh_start)--> ENDING (silent-reset)
    RUNNING    --TimerFired(liveness), no progress within the budget--> ENDING          (hang)
    RUNNING    --StopRequested--> STOPPING
    ENDING     --Exited--> BACKOFF | PREPARING (zero backoff) | GAVE_UP
    ENDING     --StopRequested--> STOPPING           (the stop under way goes on; then exit)
    STOPPING   --Exited | LaunchFailed | Reclaimed | Prepared | PrepareFailed--> STOPPED
    STOPPING   --StopRequested--> STOPPING           (second request: kill now)
    BACKOFF    --TimerFired(relaunch)--> PREPARING
    BACKOFF    --StopRequested--> STOPPED
    any        --CheckpointVerified(newer step)--> same phase, progress recorded

Every attempt ends with one cause (see `Cause`). OOM ends escalate a remedy ladder and
a NaN end switches on the NaN remedy: the overrides ride on every later Launch.

Progress (what resets the give-up count) is a newer verified checkpoint when the run
has checkpoints to verify (and its trainer's step counter does not restart at every
launch), else an attempt that ran `stable_after_s`.

COMPLETED, STOPPED and GAVE_UP are final: the supervisor exits with `exit_code`.
"""

from __future__ import annotations

import signal as _signal
from dataclasses import dataclass, field, replace
from enum import StrEnum

from supervisor.core.backoff import Backoff, uniform
from supervisor.core.health import Carry, Remedy, Watch, far_below, hang_budget_s, nan_bound, remedies
from trainer_adapters.base import Said

EXIT_OK = 0
EXIT_GAVE_UP = 3


class Phase(StrEnum):
    IDLE = "idle"  # before Boot
    RECLAIMING = "reclaiming"  # stopping what a dead supervisor's trainer left running
    PREPARING = "preparing"  # planning the resume and preparing the run directory
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"  # stopping the trainer on request, then exiting
    ENDING = "ending"  # stopping a sick trainer (hang, NaN, silent reset) to relaunch it
    BACKOFF = "backoff"
    FINISHING = "finishing"  # the trainer finished: the run directory is settled, then exit
    COMPLETED = "completed"
    STOPPED = "stopped"
    GAVE_UP = "gave_up"

    @property
    def final(self) -> bool:
        return self in (Phase.COMPLETED, Phase.STOPPED, Phase.GAVE_UP)


class Cause(StrEnum):
    """Why an attempt ended (one per attempt, in the ledger and in `status`)."""

    CRASH = "crash"  # it exited with a failure code or was killed by a signal
    HANG = "hang"  # alive, but no sign of progress within its budget
    NAN = "nan"  # its loss went NaN/Inf
    OOM_HOST = "oom-host"  # the kernel's OOM killer killed it
    OOM_CUDA = "oom-cuda"  # it printed a CUDA out-of-memory error and exited
    SILENT_RESET = "silent-reset"  # it started over although a verified state existed
    NOT_RETRYABLE = "not-retryable"  # the trainer said why, and restarting cannot fix it
    COMPLETED = "completed"
    STOPPED = "stopped"
    INTERRUPTED = "interrupted"  # the supervisor itself died while the attempt ran


class Timer(StrEnum):
    STABLE = "stable"  # the attempt has run healthy for stable_after_s
    RELAUNCH = "relaunch"  # the backoff delay is over
    LIVENESS = "liveness"  # time to check the attempt's hang budget
    SAVE_LANDED = "save_landed"  # a save the trainer announced should have landed by now


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


@dataclass(frozen=True)
class Policy:
    backoff: Backoff
    stable_after_s: float
    max_attempts_without_progress: int
    stop_signal: str = "SIGTERM"
    stop_grace_s: float = 30.0
    exit_codes_trusted: bool = True
    progress_from_checkpoints: bool = False
    # Hangs: None = no hang detection. Armed at launch (with the startup budget) where
    # progress can be read from the output, else by the first heartbeat.
    hang_timeout_s: float | None = None
    startup_timeout_s: float = 3600.0
    watch_from_launch: bool = False
    learn_factor: float = 0.0  # 0: no learned budget
    learn_min_s: float = 60.0
    # NaN/Inf losses
    nan_tolerance: int = 1  # consecutive bad readings that count as the run gone bad
    max_nan_rollbacks: int = 3
    nan_remedy: Remedy | None = None
    # Steps mean the same across attempts (False where the trainer counts from 0 at
    # every launch): only then do positions order checkpoints against readings.
    positions_comparable: bool = True
    oom_cuda_remedies: tuple[Remedy, ...] = ()
    oom_host_remedies: tuple[Remedy, ...] = ()
    max_silent_resets: int = 1  # the next one gives up
    # Fresh starts are told by the first epoch the trainer reports, which is the resumed
    # state's epoch plus this (0: VITS resumes in the saved epoch; 1: the epoch after it).
    # None: by the first step (far below the resumed one).
    reset_epoch_offset: int | None = None
    unit: str = "step"  # what checkpoint steps and positions count ("epoch" for some trainers)
    # The checkpoint directory as the config names it; "" where none is watched. Where
    # one is, a save the trainer announces must land there within save_landing_grace_s,
    # and a finished run's final state is settled before the exit.
    checkpoint_dir: str = ""
    save_landing_grace_s: float = 300.0


@dataclass(frozen=True)
class State:
    phase: Phase = Phase.IDLE
    attempt: int = 0  # the current (or last) attempt; attempts count from 1
    backoff_level: int = 0  # consecutive failures since the last stable run
    without_progress: int = 0  # consecutive attempts that ended without progress
    started_at: float | None = None  # when the current attempt was confirmed running
    stable: bool = False  # the current attempt has passed stable_after_s
    progressed: bool = False  # the current attempt made progress (see the module docstring)
    give_up_pending: bool = False  # preparing only to verify the last checkpoints before giving up
    best_step: int | None = None  # the newest verified checkpoint step ever seen
    fatal: str | None = None  # the current attempt printed an error restarting cannot fix
    completion_seen: bool = False  # the current attempt printed its trainer's completion line
    relaunch_at: float | None = None  # in BACKOFF: when the next attempt starts
    watch: Watch = field(default_factory=Watch)  # the detectors' view of the current attempt
    carry: Carry = field(default_factory=Carry)  # what outlives attempts (ledger)
    ending: Cause | None = None  # in ENDING: why the supervisor is stopping the attempt
    ending_detail: str = ""
    last_cause: Cause | None = None
    last_exit: ExitStatus | None = None
    exit_code: int | None = None  # set in a final phase
    seed: int = 0  # jitter draws are uniform(seed, attempt)
    prepare_retries: int = 0  # consecutive preparations that failed in a way that may clear


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
class Prepared:
    attempt: int
    summary: str = ""
    resume_step: int | None = None  # the verified step the trainer's rule lands on (None: none)
    resume_epoch: int | None = None  # that state's epoch, where its files say


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
    trainer_adapters.base.Said): `fatal`, `completed`, `loaded` or `fresh_start`."""

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
    Prepare | Launch | Reclaim | StopTrainer | KillTrainer | StartTimer | RecordAttemptEnd | Note | Finish
)
Decision = tuple[State, list[Action]]


# --- the decision -------------------------------------------------------------------


def decide(state: State, event: Event, now: float, policy: Policy) -> Decision:
    new, actions = _decide(state, event, now, policy)
    # A note is about the attempt the event found (with zero backoff the decision that
    # records attempt 1's failure also starts attempt 2).
    stamped = [
        replace(a, attempt=state.attempt) if isinstance(a, Note) and a.attempt is None else a for a in actions
    ]
    return new, stamped


def _decide(state: State, event: Event, now: float, policy: Policy) -> Decision:
    if state.phase.final:
        return state, []
    match event:
        case Boot():
            return _boot(state, event, policy) if state.phase is Phase.IDLE else (state, [])
        case Prepared() | PrepareFailed():
            return _prepared(state, event, now, policy)
        case CheckpointVerified():
            return _checkpoint_verified(state, event, policy)
        case TrainerSaid() | Progress():
            return _trainer_signal(state, event, now, policy)
        case Launched():
            return _launched(state, event, now, policy)
        case LaunchFailed():
            return _launch_failed(state, event, now, policy)
        case Exited():
            return _exited(state, event, now, policy)
        case Reclaimed():
            return _reclaimed(state, event, policy)
        case StopRequested():
            return _stop_requested(state, event, policy)
        case TimerFired():
            return _timer(state, event, now, policy)


def _boot(state: State, event: Boot, policy: Policy) -> Decision:
    if event.completed:
        # IDLE -> COMPLETED
        message = (
            f"this run completed already (attempt {state.attempt}); nothing to do. "
            "`train-supervisor run --again` launches the trainer once more (e.g. after raising its epochs)"
        )
        return _final(
            replace(state, last_cause=Cause.COMPLETED), Phase.COMPLETED, [], Note("completed", message)
        )
    if event.finishing:
        # IDLE -> FINISHING: settle what the previous supervisor began to, then complete
        note = Note("finishing", f"attempt {state.attempt} had finished; settling its final checkpoint state")
        return replace(state, phase=Phase.FINISHING), [note, Prepare(state.attempt, final=True)]
    if not event.unfinished:
        return _next_attempt(state, [])
    # The previous supervisor died with a trainer running: that attempt's end was never
    # seen. It counts against progress unless it had already run stably, so a trainer
    # that takes the whole machine down still ends in a give-up.
    cause = Cause.INTERRUPTED
    actions: list[Action] = [
        RecordAttemptEnd(state.attempt, cause, None, event.unfinished_stable, "supervisor was not running"),
        Note("interrupted", f"attempt {state.attempt} was interrupted: the supervisor stopped while it ran"),
        Reclaim(state.attempt),
    ]
    if not event.unfinished_stable:
        state = replace(
            state,
            backoff_level=state.backoff_level + 1,
            without_progress=state.without_progress + 1,
            last_cause=cause,
        )
    # IDLE -> RECLAIMING
    return replace(state, phase=Phase.RECLAIMING), actions


def _reclaimed(state: State, event: Reclaimed, policy: Policy) -> Decision:
    if event.attempt != state.attempt:
        return state, []
    if state.phase is Phase.STOPPING:
        # STOPPING -> STOPPED (the stop came while reclaiming)
        return _final(state, Phase.STOPPED, [], Note("stopped", "stop requested while reclaiming; exiting"))
    if state.phase is not Phase.RECLAIMING:
        return state, []
    if state.without_progress < policy.max_attempts_without_progress:
        # RECLAIMING -> PREPARING
        return _next_attempt(state, [])
    if not policy.progress_from_checkpoints:
        return _give_up(state, [], policy)
    # RECLAIMING -> PREPARING, then the give-up is decided once its checkpoints are verified
    state, actions = _next_attempt(state, [])
    return replace(state, give_up_pending=True), actions


def _next_attempt(state: State, actions: list[Action]) -> Decision:
    # -> PREPARING
    attempt = state.attempt + 1
    state = replace(
        state,
        phase=Phase.PREPARING,
        attempt=attempt,
        started_at=None,
        stable=False,
        progressed=False,
        relaunch_at=None,
        fatal=None,
        completion_seen=False,
        watch=Watch(),
        ending=None,
        ending_detail="",
    )
    return state, [*actions, Prepare(attempt, state.carry.nan_below)]


def _prepared(state: State, event: Prepared | PrepareFailed, now: float, policy: Policy) -> Decision:
    if event.attempt != state.attempt:
        return state, []
    if state.phase is Phase.FINISHING:
        return _finished(state, event)
    if state.phase is Phase.STOPPING:
        # STOPPING -> STOPPED (the stop came while preparing; nothing was launched)
        unlaunched = replace(state, attempt=state.attempt - 1)  # only launched attempts count
        note = Note("stopped", "stop requested while preparing; exiting", attempt=state.attempt)
        return _final(unlaunched, Phase.STOPPED, [], note)
    if state.phase is not Phase.PREPARING:
        return state, []
    if isinstance(event, PrepareFailed):
        unlaunched = replace(state, attempt=state.attempt - 1)  # only launched attempts count
        if event.retry and state.prepare_retries < policy.max_attempts_without_progress:
            return _prepare_again(unlaunched, event.reason, now, policy)
        # PREPARING -> GAVE_UP: relaunching could not resume from verified state
        message = f"giving up: cannot prepare attempt {state.attempt}: {event.reason}"
        return _final(unlaunched, Phase.GAVE_UP, [], Note("gave_up", message, "error"))
    state = replace(state, prepare_retries=0)
    if state.give_up_pending and state.without_progress >= policy.max_attempts_without_progress:
        # PREPARING -> GAVE_UP: even with every checkpoint verified, no progress
        last = state.last_exit.describe() if state.last_exit else ""
        return _give_up(replace(state, attempt=state.attempt - 1), [], policy, last)
    watch = replace(state.watch, resume_step=event.resume_step, resume_epoch=event.resume_epoch)
    state = replace(state, give_up_pending=False, watch=watch)
    notes: list[Action] = [Note("plan", event.summary)] if event.summary else []
    if state.carry.nan_below is not None:
        # The rollback is done: what was verified at or after the bound is gone, and
        # progress is counted again from where the trainer resumes.
        carry = replace(state.carry, nan_below=None)
        state = replace(state, carry=carry, best_step=event.resume_step)
    # PREPARING -> STARTING
    fixes = remedies(state.carry, policy.oom_cuda_remedies, policy.oom_host_remedies, policy.nan_remedy)
    return replace(state, phase=Phase.STARTING), [*notes, Launch(state.attempt, fixes)]


def _finished(state: State, event: Prepared | PrepareFailed) -> Decision:
    # FINISHING -> COMPLETED
    if isinstance(event, PrepareFailed):
        message = (
            f"training finished, but its final checkpoint state could not be settled: {event.reason} "
            "(see `train-supervisor plan` for what is wrong and the verified copies to restore from)"
        )
        return _final(state, Phase.COMPLETED, [], Note("final_state_unsettled", message, "error"))
    summary = f": {event.summary}" if event.summary else ""
    if event.resume_step is None:
        message = f"training finished, but it leaves no verified checkpoint{summary}"
        return _final(state, Phase.COMPLETED, [], Note("final_state_unsettled", message, "error"))
    note = Note("final_state", f"the final checkpoint state is settled{summary}")
    return _final(state, Phase.COMPLETED, [], note)


def _prepare_again(state: State, reason: str, now: float, policy: Policy) -> Decision:
    """A preparation that may work later (room made on a full disk) is tried again after
    a backoff, up to max_attempts_without_progress times in a row."""
    retries = state.prepare_retries + 1
    state = replace(state, prepare_retries=retries)
    delay = policy.backoff.delay_s(retries, uniform(state.seed, state.attempt + 1))
    left = policy.max_attempts_without_progress - retries
    message = f"cannot prepare attempt {state.attempt + 1}: {reason}; trying again"
    if delay == 0:
        # PREPARING -> PREPARING
        return _next_attempt(state, [Note("prepare_failed", f"{message} now ({left} more tries)", "error")])
    # PREPARING -> BACKOFF
    state = replace(state, phase=Phase.BACKOFF, relaunch_at=now + delay)
    note = Note("prepare_failed", f"{message} in {delay:.1f}s ({left} more tries)", "error")
    return state, [note, StartTimer(Timer.RELAUNCH, state.attempt, delay)]


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


def _end(state: State, cause: Cause, why: str, policy: Policy) -> Decision:
    # RUNNING -> ENDING: stop the sick attempt (with grace), then relaunch or give up
    state = replace(state, phase=Phase.ENDING, ending=cause, ending_detail=why)
    note = Note(cause.value, f"attempt {state.attempt}: {why}; stopping it", "warning")
    return state, [note, StopTrainer(policy.stop_signal, policy.stop_grace_s)]


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


def _launched(state: State, event: Launched, now: float, policy: Policy) -> Decision:
    if event.attempt != state.attempt or state.phase is not Phase.STARTING:
        return state, []  # e.g. a stop arrived first: stay STOPPING
    # STARTING -> RUNNING
    state = replace(state, phase=Phase.RUNNING, started_at=now)
    note = Note("launched", f"attempt {event.attempt} running as pid {event.pid}")
    actions: list[Action] = [note, StartTimer(Timer.STABLE, state.attempt, policy.stable_after_s)]
    if policy.hang_timeout_s is not None and policy.watch_from_launch:
        watch = replace(state.watch, armed=True, check_at=now + policy.startup_timeout_s)
        state = replace(state, watch=watch)
        actions.append(StartTimer(Timer.LIVENESS, state.attempt, policy.startup_timeout_s))
    return state, actions


def _launch_failed(state: State, event: LaunchFailed, now: float, policy: Policy) -> Decision:
    if event.attempt != state.attempt:
        return state, []
    detail = f"could not start: {event.reason}"
    if state.phase is Phase.STOPPING:
        # STOPPING -> STOPPED: the stop came before the launch could fail
        end = RecordAttemptEnd(state.attempt, Cause.STOPPED, None, False, detail)
        return _final(
            state, Phase.STOPPED, [end], Note("stopped", f"attempt {state.attempt} {detail}; exiting")
        )
    if state.phase is not Phase.STARTING:
        return state, []
    return _failed(state, now, policy, None, detail)


def _exited(state: State, event: Exited, now: float, policy: Policy) -> Decision:
    live = (Phase.RUNNING, Phase.STARTING, Phase.STOPPING, Phase.ENDING)
    if event.attempt != state.attempt or state.phase not in live:
        return state, []
    status = event.status
    end = event.at if event.at is not None else now
    if state.phase is Phase.STOPPING:
        return _exited_while_stopping(state, event, end, policy)
    ending = state.ending if state.phase is Phase.ENDING else None
    finished = ending is not None and state.completion_seen  # it said so, then hung in teardown
    if _completed(state, status, policy) or finished:
        how = "said it finished" if state.completion_seen else "exited 0"
        state = replace(state, last_exit=status, last_cause=Cause.COMPLETED)
        stable = _ran_stably(state, end, policy)
        actions: list[Action] = [
            RecordAttemptEnd(state.attempt, Cause.COMPLETED, status, stable, event.detail)
        ]
        done = Note("completed", f"training finished: attempt {state.attempt} {how} ({status.describe()})")
        if policy.checkpoint_dir:
            # RUNNING | ENDING -> FINISHING
            return replace(state, phase=Phase.FINISHING), [*actions, done, Prepare(state.attempt, final=True)]
        # RUNNING | ENDING -> COMPLETED
        return _final(state, Phase.COMPLETED, actions, done)
    if state.fatal is not None and ending in (None, Cause.HANG):
        # RUNNING | ENDING -> GAVE_UP: relaunching would fail the same way (a rank that
        # raised can leave the others waiting in a collective: a hang after a fatal line)
        stable = _ran_stably(state, end, policy)
        end_action = RecordAttemptEnd(state.attempt, Cause.NOT_RETRYABLE, status, stable, state.fatal)
        state = replace(state, last_exit=status, last_cause=Cause.NOT_RETRYABLE)
        message = f"giving up: attempt {state.attempt} failed ({status.describe()}) and restarting cannot fix it: {state.fatal}"
        return _final(state, Phase.GAVE_UP, [end_action], Note("gave_up", message, "error"))
    if ending is not None:
        # ENDING -> BACKOFF | PREPARING | GAVE_UP. A hang after an out-of-memory line is
        # that OOM (the rank that ran out left the others waiting): its ladder climbs.
        if ending is Cause.HANG and state.watch.oom_line is not None:
            ending = Cause.OOM_CUDA
        return _failed(state, now, policy, status, state.ending_detail, end, ending)
    return _failed(state, now, policy, status, event.detail, end, _failure_cause(state, event))


def _failure_cause(state: State, event: Exited) -> Cause:
    if event.oom_killed:
        return Cause.OOM_HOST
    return Cause.OOM_CUDA if state.watch.oom_line is not None else Cause.CRASH


def _completed(state: State, status: ExitStatus, policy: Policy) -> bool:
    """Exit 0 from a trainer whose exit codes mean something, or any exit after its
    completion line from one whose exit codes lie."""
    clean = status.code == 0
    if state.completion_seen and (clean or not policy.exit_codes_trusted):
        return True
    return clean and policy.exit_codes_trusted


def _exited_while_stopping(state: State, event: Exited, end: float, policy: Policy) -> Decision:
    # STOPPING -> STOPPED. A trainer that had already died on its own before the stop
    # signal went out keeps its real cause, and a crash still counts.
    status = event.status
    stable = _ran_stably(state, end, policy)
    cause = state.ending or Cause.STOPPED  # a stop that came while ending a sick attempt keeps its cause
    if event.before_stop:
        cause = Cause.COMPLETED if _completed(state, status, policy) else _failure_cause(state, event)
        if cause is not Cause.COMPLETED and state.fatal is not None:
            cause = Cause.NOT_RETRYABLE
    progressed = _made_progress(state, stable, policy)
    if cause not in (Cause.COMPLETED, Cause.STOPPED) and not progressed:
        state = replace(
            state, backoff_level=state.backoff_level + 1, without_progress=state.without_progress + 1
        )
    return _final(
        replace(state, last_exit=status, last_cause=cause),
        Phase.STOPPED,
        [RecordAttemptEnd(state.attempt, cause, status, stable, event.detail)],
        Note("stopped", f"attempt {state.attempt} ended ({cause.value}, {status.describe()}); exiting"),
    )


def _failed(
    state: State,
    now: float,
    policy: Policy,
    status: ExitStatus | None,
    detail: str,
    ended_at: float | None = None,
    cause: Cause = Cause.CRASH,
) -> Decision:
    """An attempt ended badly: count it, then relaunch (after backoff) or give up.
    `detail` is what is known beside the exit status (e.g. the last line printed)."""
    stable = _ran_stably(state, ended_at if ended_at is not None else now, policy)
    progressed = _made_progress(state, stable, policy)
    # A stable run restarts the backoff; progress restarts the count towards giving up.
    level = 1 if stable else state.backoff_level + 1
    without = 0 if progressed else state.without_progress + 1
    state = replace(
        state,
        backoff_level=level,
        without_progress=without,
        last_cause=cause,
        last_exit=status,
        stable=stable,
        ending=None,
    )
    actions: list[Action] = [RecordAttemptEnd(state.attempt, cause, status, stable, detail)]
    why = "; ".join(part for part in (status.describe() if status else "", detail) if part)
    verb = "failed" if cause is Cause.CRASH else f"ended ({cause.value})"
    if (stop := _cause_gives_up(state, cause, policy)) is not None:
        return _final(state, Phase.GAVE_UP, actions, Note("gave_up", stop, "error"))
    state, remedy_notes = _escalate(state, cause, policy)
    actions += remedy_notes
    if without >= policy.max_attempts_without_progress:
        if not policy.progress_from_checkpoints:
            return _give_up(state, actions, policy, why)
        # A checkpoint saved just before the crash may still be landing: the preparation
        # verifies it first, and the give-up is decided when that is done.
        message = f"attempt {state.attempt} {verb} ({why}); checking its last checkpoints before giving up"
        state, actions = _next_attempt(state, [*actions, Note("crashed", message, "warning")])
        return replace(state, give_up_pending=True), actions
    delay = policy.backoff.delay_s(level, uniform(state.seed, state.attempt))
    if delay == 0:
        actions.append(Note("crashed", f"attempt {state.attempt} {verb} ({why}); relaunching now", "warning"))
        return _next_attempt(state, actions)
    # RUNNING | ENDING -> BACKOFF
    state = replace(state, phase=Phase.BACKOFF, relaunch_at=now + delay)
    actions += [
        Note("crashed", f"attempt {state.attempt} {verb} ({why}); relaunching in {delay:.1f}s", "warning"),
        StartTimer(Timer.RELAUNCH, state.attempt, delay),
    ]
    return state, actions


def _cause_gives_up(state: State, cause: Cause, policy: Policy) -> str | None:
    """Why this kind of end, repeated, is not worth another attempt."""
    carry = state.carry
    if cause is Cause.NAN and carry.nan_rollbacks > policy.max_nan_rollbacks:
        return (
            f"giving up: the loss went NaN/Inf {carry.nan_rollbacks} times without the run getting past "
            f"where it went bad (max_rollbacks = {policy.max_nan_rollbacks}); last: {state.ending_detail}"
        )
    if cause is Cause.SILENT_RESET and carry.silent_resets > policy.max_silent_resets:
        return (
            f"giving up: the trainer started from scratch {carry.silent_resets} times in a row although a "
            "verified checkpoint was in place for it (silent-reset: its own resume logic did not load it; "
            "see the trainer log and 'train-supervisor plan')"
        )
    return None


def _escalate(state: State, cause: Cause, policy: Policy) -> tuple[State, list[Action]]:
    """After an OOM, the next rung of that kind's remedy ladder (cumulative)."""
    carry = state.carry
    if cause is Cause.OOM_CUDA and carry.oom_cuda_level < len(policy.oom_cuda_remedies):
        rung = policy.oom_cuda_remedies[carry.oom_cuda_level]
        carry = replace(carry, oom_cuda_level=carry.oom_cuda_level + 1)
    elif cause is Cause.OOM_HOST and carry.oom_host_level < len(policy.oom_host_remedies):
        rung = policy.oom_host_remedies[carry.oom_host_level]
        carry = replace(carry, oom_host_level=carry.oom_host_level + 1)
    elif cause is Cause.NAN and policy.nan_remedy is not None:
        return state, [Note("remedy", f"relaunches run with the NaN remedy: {policy.nan_remedy.describe()}")]
    else:
        return state, []
    note = Note("remedy", f"after {cause.value}, relaunches also run with {rung.describe()}", "warning")
    return replace(state, carry=carry), [note]


def _give_up(state: State, actions: list[Action], policy: Policy, detail: str = "") -> Decision:
    # RUNNING | STARTING | RECLAIMING -> GAVE_UP
    last = f"; last: {detail}" if detail else ""
    message = (
        f"giving up: {state.without_progress} consecutive attempts without progress "
        f"(max_attempts_without_progress = {policy.max_attempts_without_progress}){last}"
    )
    return _final(state, Phase.GAVE_UP, actions, Note("gave_up", message, "error"))


def _final(state: State, phase: Phase, actions: list[Action], note: Note) -> Decision:
    code = EXIT_GAVE_UP if phase is Phase.GAVE_UP else EXIT_OK
    state = replace(state, phase=phase, exit_code=code, relaunch_at=None)
    return state, [*actions, note, Finish(code)]


def _made_progress(state: State, stable: bool, policy: Policy) -> bool:
    """A newer verified checkpoint when there are checkpoints, else a stable run."""
    return state.progressed if policy.progress_from_checkpoints else stable


def _ran_stably(state: State, now: float, policy: Policy) -> bool:
    if state.stable:
        return True
    return state.started_at is not None and now - state.started_at >= policy.stable_after_s


def _stop_requested(state: State, event: StopRequested, policy: Policy) -> Decision:
    match state.phase:
        case Phase.PREPARING:
            # PREPARING -> STOPPING: let the preparation finish (it moves files), then exit
            note = Note("stopping", f"{event.reason}: exiting once the run directory is prepared")
            return replace(state, phase=Phase.STOPPING), [note]
        case Phase.RUNNING | Phase.STARTING:
            # RUNNING -> STOPPING
            note = Note(
                "stopping",
                f"{event.reason}: stopping attempt {state.attempt} "
                f"({policy.stop_signal}, SIGKILL after {policy.stop_grace_s:g}s)",
            )
            return replace(state, phase=Phase.STOPPING), [
                note,
                StopTrainer(policy.stop_signal, policy.stop_grace_s),
            ]
        case Phase.ENDING:
            # ENDING -> STOPPING: the trainer is being stopped already; exit once it is gone
            note = Note("stopping", f"{event.reason}: exiting once attempt {state.attempt} has stopped")
            return replace(state, phase=Phase.STOPPING), [note]
        case Phase.RECLAIMING:
            # RECLAIMING -> STOPPING: the reclaim is a stop already; finish it, then exit
            note = Note("stopping", f"{event.reason}: exiting once the interrupted attempt is cleared")
            return replace(state, phase=Phase.STOPPING), [note]
        case Phase.FINISHING:
            # FINISHING -> FINISHING: no trainer is left; the settling is bounded, then exit
            return state, [Note("stopping", f"{event.reason}: exiting once the final state is settled")]
        case Phase.STOPPING:
            # STOPPING -> STOPPING, escalated
            return state, [
                Note("killing", f"{event.reason} again: killing the trainer now", "warning"),
                KillTrainer(),
            ]
        case _:
            # BACKOFF | IDLE -> STOPPED: no trainer is running
            where = "before launch" if state.phase is Phase.IDLE else "during backoff"
            return _final(state, Phase.STOPPED, [], Note("stopped", f"{event.reason} {where}; exiting"))


def _timer(state: State, event: TimerFired, now: float, policy: Policy) -> Decision:
    if event.attempt != state.attempt:
        return state, []
    if event.timer is Timer.STABLE and state.phase is Phase.RUNNING and not state.stable:
        # RUNNING -> RUNNING, backoff reset (and the give-up count, without checkpoints)
        state = replace(state, stable=True, backoff_level=0)
        if not policy.positions_comparable and state.carry.nan_rollbacks:
            # Steps cannot tell whether it got past a bad step: a stable run says so.
            state = replace(state, carry=replace(state.carry, nan_rollbacks=0))
        if not policy.progress_from_checkpoints:
            state = replace(state, without_progress=0, progressed=True)
        note = Note("stable", f"attempt {state.attempt} has run {policy.stable_after_s:g}s: backoff reset")
        return state, [note]
    if event.timer is Timer.RELAUNCH and state.phase is Phase.BACKOFF:
        # BACKOFF -> PREPARING
        return _next_attempt(state, [])
    if event.timer is Timer.LIVENESS and state.phase is Phase.RUNNING and state.watch.armed:
        return _check_liveness(state, now, policy)
    if event.timer is Timer.SAVE_LANDED and state.phase is Phase.RUNNING:
        return _check_save_landed(state, now, policy)
    return state, []


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


def next_delay_s(state: State, policy: Policy) -> float:
    """The un-jittered delay the next failure would wait (for `status`)."""
    level = 1 if state.stable else state.backoff_level + 1
    return policy.backoff.base_s(level)
