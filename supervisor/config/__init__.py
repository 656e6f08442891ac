"""The TOML configuration: the model (`model`), reading it (`reading`: `load`), writing
it back (`render`), and finding a run's state without the model (`run_place`: `locate`,
for `status`).

The names below are loaded when first used (PEP 562): `status` needs only `locate`, and
importing pydantic and building the model would cost it most of its start-up.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from supervisor.config.model import (
        EXPANDABLE_SEGMENTS,
        NOTIFIABLE,
        AdapterSection,
        CheckpointsSection,
        Config,
        Count,
        DriftSection,
        GpuSection,
        HeartbeatSection,
        HousekeepingSection,
        LogsSection,
        MetricsSection,
        NanSection,
        NotifySection,
        OomSection,
        RemedySection,
        RestartSection,
        RunSection,
        Seconds,
        Section,
        StopSection,
        WebhookSection,
        nan_tolerance,
        shown_url,
        signal_name,
    )
    from supervisor.config.reading import (
        ConfigError,
        load,
    )
    from supervisor.config.render import (
        to_toml,
    )
    from supervisor.config.run_place import (
        RUN_NAME,
        RunPlace,
        default_state_dir,
        locate,
    )

# Where each public name lives (a module of this package).
_HOME = {
    "AdapterSection": "model",
    "CheckpointsSection": "model",
    "Config": "model",
    "ConfigError": "reading",
    "Count": "model",
    "DriftSection": "model",
    "EXPANDABLE_SEGMENTS": "model",
    "GpuSection": "model",
    "HeartbeatSection": "model",
    "HousekeepingSection": "model",
    "LogsSection": "model",
    "MetricsSection": "model",
    "NOTIFIABLE": "model",
    "NanSection": "model",
    "NotifySection": "model",
    "OomSection": "model",
    "RUN_NAME": "run_place",
    "RemedySection": "model",
    "RestartSection": "model",
    "RunPlace": "run_place",
    "RunSection": "model",
    "Seconds": "model",
    "Section": "model",
    "StopSection": "model",
    "WebhookSection": "model",
    "default_state_dir": "run_place",
    "load": "reading",
    "locate": "run_place",
    "nan_tolerance": "model",
    "shown_url": "model",
    "signal_name": "model",
    "to_toml": "render",
}

__all__ = [
    "EXPANDABLE_SEGMENTS",
    "NOTIFIABLE",
    "RUN_NAME",
    "AdapterSection",
    "CheckpointsSection",
    "Config",
    "ConfigError",
    "Count",
    "DriftSection",
    "GpuSection",
    "HeartbeatSection",
    "HousekeepingSection",
    "LogsSection",
    "MetricsSection",
    "NanSection",
    "NotifySection",
    "OomSection",
    "RemedySection",
    "RestartSection",
    "RunPlace",
    "RunSection",
    "Seconds",
    "Section",
    "StopSection",
    "WebhookSection",
    "default_state_dir",
    "load",
    "locate",
    "nan_tolerance",
    "shown_url",
    "signal_name",
    "to_toml",
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
