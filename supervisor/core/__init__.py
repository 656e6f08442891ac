"""The decision core: `decide(state, event, now, policy) -> (state, actions)`.

Pure: no I/O, no clock reads, no randomness; it imports only the standard library and
itself. The edges report events (`events`), the core answers with actions (`actions`).
Callers write `from supervisor.core import decide, Exited`.

The names below are loaded when first used (PEP 562), so that importing one module of
the core (an adapter's `Said`, the config's `Remedy`) does not load all of it: the
command line's start-up pays only for what a command uses.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
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
    from supervisor.core.decisions import decide, next_delay_s
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
        StopRequested,
        TimerFired,
        TrainerSaid,
    )
    from supervisor.core.phases import EXIT_GAVE_UP, EXIT_OK, Cause, Phase, Timer
    from supervisor.core.said import Said
    from supervisor.core.state import Policy, State

# Where each public name lives (a module of this package).
_HOME = {
    "Action": "actions",
    "Decision": "actions",
    "Finish": "actions",
    "KillLeftovers": "actions",
    "KillTrainer": "actions",
    "Launch": "actions",
    "Note": "actions",
    "Prepare": "actions",
    "Reclaim": "actions",
    "RecordAttemptEnd": "actions",
    "StartTimer": "actions",
    "StopTrainer": "actions",
    "decide": "decisions",
    "next_delay_s": "decisions",
    "Boot": "events",
    "CheckpointVerified": "events",
    "ConfigChange": "events",
    "Event": "events",
    "ExitStatus": "events",
    "Exited": "events",
    "LaunchFailed": "events",
    "Launched": "events",
    "PrepareFailed": "events",
    "Prepared": "events",
    "Progress": "events",
    "Reclaimed": "events",
    "Said": "said",
    "StopRequested": "events",
    "TimerFired": "events",
    "TrainerSaid": "events",
    "Cause": "phases",
    "EXIT_GAVE_UP": "phases",
    "EXIT_OK": "phases",
    "Phase": "phases",
    "Timer": "phases",
    "Policy": "state",
    "State": "state",
}

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


def __getattr__(name: str) -> object:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOME])
