"""structlog setup: JSON lines when stdout is not a terminal (journald), readable
console lines on a terminal. Every line carries the bound `run` and an `attempt`: the one
it names, else the current one (from `follow_attempt`, read when the line is written, so
tasks started long ago say the right one). Secrets given to `redact_secrets` never reach
a line. Records from the standard `logging` module (watchdog, apscheduler) take the same
path.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, MutableMapping
from typing import Any, TextIO

import structlog
from structlog.typing import Processor

from supervisor.ledger.text import Redactor, readable

_current_attempt: Callable[[], int] | None = None
_redact = Redactor()


def follow_attempt(current: Callable[[], int] | None) -> None:
    global _current_attempt
    _current_attempt = current


def redact_secrets(redactor: Redactor) -> None:
    global _redact
    _redact = redactor


def _add_attempt(
    logger: object, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    if "attempt" not in event_dict:
        event_dict["attempt"] = _current_attempt() if _current_attempt is not None else 0
    return event_dict


def _clean(logger: object, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """No secret in any value, and every string printable (a file name that is not UTF-8)."""
    for key, value in event_dict.items():
        if isinstance(value, str):
            event_dict[key] = _redact(readable(value))
    return event_dict


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
        _add_attempt,
        _clean,
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


class FirstErrorLog:
    """Logs the first error with its traceback, then only counts: something that keeps
    failing (a client, a webhook) must not flood the journal."""

    def __init__(self, what: str, logger: str = "supervisor") -> None:
        self.what = what
        self.logger = logger
        self.count = 0

    def exception(self) -> None:
        self.count += 1
        if self.count == 1:
            structlog.get_logger(self.logger).exception(f"{self.what}; later errors are only counted")
