"""What a line of the trainer's output can tell: the vocabulary the adapters' line rules
use (its own module, so that importing an adapter does not load the core's events)."""

from __future__ import annotations

from enum import StrEnum


class Said(StrEnum):
    """What a line of the trainer's output can tell."""

    PROGRESS = "progress"  # groups: step and/or epoch
    LOSS = "loss"  # group `losses` (comma separated numbers), optional step/epoch
    LOADED = "loaded"  # the trainer says it resumed; optional group `path`
    FRESH_START = "fresh_start"  # the trainer says it starts from scratch
    COMPLETED = "completed"  # training finished (what marks completion when exit codes lie)
    SAVED = "saved"  # the trainer says it wrote a checkpoint: one must land in checkpoint_dir
    FATAL = "fatal"  # restarting cannot fix this: when the attempt fails, give up with `explain`
    OOM = "oom"  # out of GPU memory (common to every trainer: see supervisor.signals.output_reader)
