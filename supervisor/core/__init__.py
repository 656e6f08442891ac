"""The decision core: `decide(state, event, now, policy) -> (state, actions)`.

Pure: no I/O, no clock reads, no randomness; it imports only the standard library and
itself. The edges report events (`events`), the core answers with actions (`actions`).
Callers write `from supervisor.core import decide, Exited`.
"""

from supervisor.core.actions import (
    Action,
    Decision,
    Finish,
    KillLeftovers,
    KillTrainer,
    Launch,
    Note,
    Prepare,
    Reclaim,
    RecordAttemptEnd,
    StartTimer,
    StopTrainer,
)
from supervisor.core.decide import decide, next_delay_s
from supervisor.core.events import (
    Boot,
    CheckpointVerified,
    ConfigChange,
    Event,
    Exited,
    ExitStatus,
    Launched,
    LaunchFailed,
    Prepared,
    PrepareFailed,
    Progress,
    Reclaimed,
    Said,
    StopRequested,
    TimerFired,
    TrainerSaid,
)
from supervisor.core.phases import EXIT_GAVE_UP, EXIT_OK, Cause, Phase, Timer
from supervisor.core.state import Policy, State

__all__ = [
    "EXIT_GAVE_UP",
    "EXIT_OK",
    "Action",
    "Boot",
    "Cause",
    "CheckpointVerified",
    "ConfigChange",
    "Decision",
    "Event",
    "ExitStatus",
    "Exited",
    "Finish",
    "KillLeftovers",
    "KillTrainer",
    "Launch",
    "LaunchFailed",
    "Launched",
    "Note",
    "Phase",
    "Policy",
    "Prepare",
    "PrepareFailed",
    "Prepared",
    "Progress",
    "Reclaim",
    "Reclaimed",
    "RecordAttemptEnd",
    "Said",
    "StartTimer",
    "State",
    "StopRequested",
    "StopTrainer",
    "Timer",
    "TimerFired",
    "TrainerSaid",
    "decide",
    "next_delay_s",
]
