"""From the trainer's output to core events: pure line reading with the adapter's rules.

Only the lines that matter to a decision become events (fatal errors, completion, the
trainer's own word on what it resumed from, and the first sign of progress after a fatal
error: the trainer went on, so it was not fatal); progress and loss readings are parsed by
the same rules and left to the detectors that use them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from supervisor.core import Event, TrainerSaid
from trainer_adapters.base import LineRule, Said
from trainer_adapters.rules import Reading, read_line

DECISIVE = (Said.FATAL, Said.COMPLETED, Said.LOADED, Said.FRESH_START)
PROGRESSING = (Said.PROGRESS, Said.LOSS)


class OutputReader:
    """A line handler for the OutputSink: (stream, line) -> TrainerSaid events."""

    def __init__(
        self, rules: Sequence[LineRule], attempt: Callable[[], int], emit: Callable[[Event], None]
    ) -> None:
        self.rules = tuple(rules)
        self.attempt = attempt
        self.emit = emit
        self._fatal_in: int | None = None  # the attempt that printed a fatal line, until it goes on

    def __call__(self, stream: str, line: str) -> None:
        if not self.rules:
            return
        attempt = self.attempt()
        readings = read_line(self.rules, line)
        for event in decisive(readings, attempt):
            self.emit(event)
            if event.said is Said.FATAL:
                self._fatal_in = attempt
        if self._fatal_in == attempt and any(r.said in PROGRESSING for r in readings):
            self._fatal_in = None
            self.emit(TrainerSaid(attempt, Said.PROGRESS, line))


def decisive(readings: Sequence[Reading], attempt: int) -> list[TrainerSaid]:
    return [TrainerSaid(attempt, r.said, r.line, r.explain) for r in readings if r.said in DECISIVE]


def said(rules: Sequence[LineRule], line: str, attempt: int) -> list[TrainerSaid]:
    """The decisive things one line says."""
    return decisive(read_line(rules, line), attempt)
