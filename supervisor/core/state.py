"""What the core knows between events (`State`) and what it is told once (`Policy`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from supervisor.core.backoff import Backoff
from supervisor.core.events import ExitStatus
from supervisor.core.health import Carry, Remedy, Watch
from supervisor.core.phases import Cause, Phase


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
    # A change of the trainer's config files since the last launch refuses the next one
    # ([drift] policy = "refuse", not accepted on the command line); else it is a warning.
    refuse_config_change: bool = False


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
