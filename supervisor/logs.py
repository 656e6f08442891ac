"""structlog setup: JSON lines when stdout is not a terminal (journald), readable
console lines on a terminal. Every line carries the bound `run` and `attempt`.
Records from the standard `logging` module (watchdog, apscheduler) take the same path.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog
from structlog.typing import Processor


def configure(
    json_output: bool | None = None, level: int = logging.INFO, stream: TextIO | None = None
) -> None:
    """`run` logs to stdout; one-shot commands log warnings to stderr, so their own
    output (JSON included) stays clean."""
    stream = stream or sys.stdout
    if json_output is None:
        json_output = not stream.isatty()
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        # UTC ISO for machines, local wall time for a person at a terminal.
        structlog.processors.TimeStamper(fmt="iso" if json_output else "%Y-%m-%d %H:%M:%S", utc=json_output),
    ]
    renderer: Processor
    if json_output:
        renderer = structlog.processors.JSONRenderer()
        final: list[Processor] = [structlog.processors.format_exc_info, renderer]
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty(), sort_keys=False)
        final = [renderer]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The scheduler's own chatter (started, job added, job ran) is not the run's story;
    # its warnings (a job that failed or was missed) are.
    logging.getLogger("apscheduler").setLevel(max(level, logging.WARNING))
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def bind(**values: Any) -> None:
    structlog.contextvars.bind_contextvars(**values)
