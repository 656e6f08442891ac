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
    PREPARING  --Prepared(config changed, refused)--> GAVE_UP   (the checks before a launch refuse it)
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

from enum import StrEnum

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
