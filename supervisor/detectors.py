"""From the trainer's output to core events: pure line reading with the adapter's rules.

Only the lines that matter to a decision become events (fatal errors, completion, the
trainer's own word on what it resumed from); progress and loss readings are parsed by
the same rules and left to the detectors that use them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from supervisor.core import Event, TrainerSaid
from trainer_adapters.base import LineRule, Said
from trainer_adapters.rules import read_line

DECISIVE = (Said.FATAL, Said.COMPLETED, Said.LOADED, Said.FRESH_START)


class OutputReader:
    """A line handler for the OutputSink: (stream, line) -> TrainerSaid events."""

    def __init__(
        self, rules: Sequence[LineRule], attempt: Callable[[], int], emit: Callable[[Event], None]
    ) -> None:
        self.rules = tuple(rule for rule in rules if rule.said in DECISIVE)
        self.attempt = attempt
        self.emit = emit

    def __call__(self, stream: str, line: str) -> None:
        if not self.rules:
            return
        for event in said(self.rules, line, self.attempt()):
            self.emit(event)


def said(rules: Sequence[LineRule], line: str, attempt: int) -> list[TrainerSaid]:
    """The decisive things one line says."""
    return [
        TrainerSaid(attempt, reading.said, line, reading.explain)
        for reading in read_line(rules, line)
        if reading.said in DECISIVE
    ]
