"""The one small interface every trainer adapter shares.

An adapter is data, not a framework: a name, the options a config may set under
`[adapter]`, and facts about the trainer that the supervisor's policy needs.
Checkpoint layouts, resume rules and log parsers join this interface as the
checkpoint pipeline and the detectors arrive.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict


class AdapterOptions(BaseModel):
    """Adapter-specific keys of the `[adapter]` table. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class TrainerAdapter:
    name: str
    summary: str
    options: type[AdapterOptions]
    # False for trainers whose exit status says nothing (they exit 0 on a crash or
    # non-zero on success); completion must then come from elsewhere.
    exit_codes_trusted: bool = True
