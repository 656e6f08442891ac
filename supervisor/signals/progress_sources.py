"""The attempt's signs of life beside its output: heartbeats from the trainer-side client
(supervisor.client) and, for trainers that keep their losses there, TensorBoard scalars.
Both become Progress events for the core.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path

import structlog

from supervisor.core import Event
from supervisor.signals.heartbeats import Beat, HeartbeatServer
from supervisor.signals.output_reader import heartbeat_progress, metrics_progress
from supervisor.signals.tensorboard import EventDirReader, Scalar
from trainer_adapters.base import Metrics, TrainerAdapter
from trainer_adapters.rules import compiled

log = structlog.get_logger("supervisor")

METRICS_POLL_S = 1.0  # how often TensorBoard event files are read for new scalars


class Vitals:
    def __init__(
        self,
        adapter: TrainerAdapter,
        metrics_dir: Path | None,
        run_dir: Path,
        emit: Callable[[Event], None],
        *,
        attempt: Callable[[], int],
        marker: Callable[[], str | None],
    ) -> None:
        self.adapter = adapter
        self.emit = emit
        self.attempt = attempt
        self.marker = marker
        self.heartbeats = HeartbeatServer(run_dir, self._beat)
        self.metrics = (
            MetricsPoller(metrics_dir, adapter.metrics, self._metrics)
            if adapter.metrics is not None and metrics_dir is not None
            else None
        )

    async def start(self) -> None:
        try:
            await self.heartbeats.start()
        except OSError as exc:  # supervision goes on without them
            log.warning(
                "heartbeats cannot be received", error=str(exc), directory=str(self.heartbeats.directory)
            )
        if self.metrics is not None:
            self.metrics.start()

    async def stop(self) -> None:
        if self.metrics is not None:
            await self.metrics.stop()
        await self.heartbeats.stop()

    def env(self) -> dict[str, str]:
        """What the trainer's environment needs for its heartbeats to arrive."""
        return self.heartbeats.env()

    def _beat(self, beat: Beat) -> None:
        if beat.marker != self.marker():
            return  # from an attempt that is over (or not ours)
        self.emit(heartbeat_progress(self.attempt(), beat.step, beat.loss, self.adapter.position_unit))

    def _metrics(self, step: int, values: Sequence[tuple[str, float]]) -> None:
        self.emit(metrics_progress(self.attempt(), step, values))


class MetricsPoller:
    """Reads new loss scalars from a TensorBoard directory every METRICS_POLL_S, one
    reading per logged step. What was there before it started is history: skipped."""

    def __init__(
        self,
        directory: Path,
        metrics: Metrics,
        on_step: Callable[[int, Sequence[tuple[str, float]]], None],
    ) -> None:
        pattern = compiled(metrics.tags)
        self.reader = EventDirReader(directory, lambda tag: pattern.search(tag) is not None)
        self.on_step = on_step
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task})  # (never swallows a cancellation of this stop)

    async def _run(self) -> None:
        # What earlier attempts logged is history (and a long run's file takes seconds
        # to read through once: in a thread).
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.reader.poll)
        while True:
            await asyncio.sleep(METRICS_POLL_S)
            try:
                scalars = await asyncio.to_thread(self.reader.poll)
            except Exception:  # a reader bug must not end supervision
                log.exception("error while reading TensorBoard scalars")
                continue
            for step, values in by_step(scalars):
                self.on_step(step, values)


def by_step(scalars: Sequence[Scalar]) -> list[tuple[int, list[tuple[str, float]]]]:
    steps: dict[int, list[tuple[str, float]]] = {}
    for scalar in scalars:
        steps.setdefault(scalar.step, []).append((scalar.tag, scalar.value))
    return sorted(steps.items())
