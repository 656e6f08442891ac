"""From what the trainer shows to core events: its output lines (read with the adapter's
rules), its heartbeats and its TensorBoard scalars. Pure reading, plus the little memory
it takes to tell an advancing line from a repeated one.

Decisive lines become TrainerSaid (fatal errors, out-of-memory errors, completion, the
trainer's own word on what it resumed from); progress and loss lines become Progress,
with the position in the unit of the checkpoints' steps and whether the losses were
finite. A line is a sign of progress only when it advances: a new step, or (for lines
without a step) a line different from the last one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

from supervisor.core import Event, Progress, TrainerSaid
from trainer_adapters.base import LineRule, Said
from trainer_adapters.rules import Reading, read_line

DECISIVE = (Said.FATAL, Said.OOM, Said.COMPLETED, Said.LOADED, Said.FRESH_START, Said.SAVED)
PROGRESSING = (Said.PROGRESS, Said.LOSS)

# What PyTorch (and the CUDA/ROCm libraries under it) print when GPU memory runs out:
# the same for every trainer.
COMMON_LINES = (
    LineRule(
        Said.OOM,
        r"CUDA out of memory|torch\.(?:cuda\.)?OutOfMemoryError|CUDA error: out of memory"
        r"|HIP out of memory|CUBLAS_STATUS_ALLOC_FAILED|CUDNN_STATUS_ALLOC_FAILED",
    ),
)

Unit = Literal["step", "epoch"]


def position_of(reading: Reading, unit: Unit) -> int | None:
    return reading.step if unit == "step" else reading.epoch


class OutputReader:
    """A line handler for the OutputSink: (stream, line) -> TrainerSaid and Progress."""

    def __init__(
        self,
        rules: Sequence[LineRule],
        unit: Unit,
        attempt: Callable[[], int],
        emit: Callable[[Event], None],
    ) -> None:
        self.rules = (*rules, *COMMON_LINES)
        self.unit = unit
        self.attempt = attempt
        self.emit = emit
        self._last: tuple[int, object] | None = None  # (attempt, key of the last advancing line)

    def __call__(self, stream: str, line: str) -> None:
        attempt = self.attempt()
        readings = read_line(self.rules, line)
        for event in decisive(readings, attempt):
            self.emit(event)
        progressing = [r for r in readings if r.said in PROGRESSING]
        if not progressing:
            return
        key = _key(progressing, line)
        if self._last == (attempt, key):
            return  # a redraw of the same progress bar, not progress
        self._last = (attempt, key)
        self.emit(progress_from(progressing, attempt, self.unit, line))


def _key(readings: Sequence[Reading], line: str) -> object:
    steps = [r.step for r in readings if r.step is not None]
    if steps:
        return ("step", max(steps), max((r.epoch or 0) for r in readings))
    return ("line", line.strip())


def progress_from(readings: Sequence[Reading], attempt: int, unit: Unit, line: str) -> Progress:
    positions = [p for r in readings if (p := position_of(r, unit)) is not None]
    epochs = [r.epoch for r in readings if r.epoch is not None]
    losses = [v for r in readings for v in r.losses]
    nonfinite = any(not math.isfinite(v) for v in losses) if losses else None
    position = max(positions) if positions else None
    epoch = max(epochs) if epochs else None
    return Progress(attempt, "output", position, nonfinite, line.strip()[:300], epoch)


def decisive(readings: Sequence[Reading], attempt: int) -> list[TrainerSaid]:
    return [TrainerSaid(attempt, r.said, r.line, r.explain) for r in readings if r.said in DECISIVE]


def said(rules: Sequence[LineRule], line: str, attempt: int) -> list[TrainerSaid]:
    """The decisive things one line says (common out-of-memory errors included)."""
    return decisive(read_line((*rules, *COMMON_LINES), line), attempt)


def heartbeat_progress(attempt: int, step: int | None, loss: float | None, unit: Unit) -> Progress:
    """A heartbeat from the trainer-side client. Its step counts as a position only where
    the checkpoints count steps (an epoch-counting trainer's heartbeat steps do not)."""
    nonfinite = None if loss is None else not math.isfinite(loss)
    position = step if unit == "step" else None
    shown = f"heartbeat step={step if step is not None else '-'} loss={loss if loss is not None else '-'}"
    return Progress(attempt, "heartbeat", position, nonfinite, shown)


def metrics_progress(attempt: int, step: int, values: Sequence[tuple[str, float]]) -> Progress:
    """The loss scalars one TensorBoard step logged (positions there are global steps,
    which no adapter's checkpoints count in: no position)."""
    bad = [tag for tag, v in values if not math.isfinite(v)]
    shown = f"TensorBoard step {step}: " + (f"non-finite {', '.join(bad)}" if bad else "finite losses")
    return Progress(attempt, "metrics", None, bool(bad), shown)
