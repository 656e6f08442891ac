"""A stop that takes too long says why: each edge's stop is bounded (the supervisor exits
without the one that hangs, naming it), and once a stop has run past what it should
take, the stacks of every thread go to stderr (the journal, under systemd), from a
thread of the interpreter's own, so that even a stuck event loop shows where it is.
"""

from __future__ import annotations

import asyncio
import faulthandler
import sys
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger("supervisor")

EDGE_STOP_TIMEOUT_S = 60.0  # one edge's stop (watcher, validator, servers) at the end of a run
STOP_OVERRUN_S = 120.0  # past the trainer's grace period: a stop that takes longer is stuck


class StopOverrun:
    """Armed when a stop begins; the run's end disarms it."""

    def __init__(self) -> None:
        self._timer: asyncio.TimerHandle | None = None

    def arm(self, grace_s: float) -> None:
        """Once per run: the trainer has `grace_s` to go, then SIGKILL; the rest is ours."""
        if self._timer is not None:
            return
        after_s = grace_s + STOP_OVERRUN_S
        self._timer = asyncio.get_running_loop().call_later(after_s, _still_stopping, after_s)
        try:
            faulthandler.dump_traceback_later(after_s, file=sys.stderr)
        except (OSError, ValueError, AttributeError):  # no usable stderr (closed, or not a file)
            log.debug("no stack dump for a stop that overruns: stderr is not a file")

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            faulthandler.cancel_dump_traceback_later()
            self._timer = None


def _still_stopping(after_s: float) -> None:
    log.error(
        "the supervisor is still stopping; the stacks of its threads are on stderr "
        "(please include them in a bug report)",
        after_s=after_s,
    )


async def stop_edges(edges: list[tuple[str, Callable[[], Awaitable[None]]]]) -> None:
    """Stop each edge in turn, at most EDGE_STOP_TIMEOUT_S each; one that hangs or fails
    is named in the log and left behind, never keeps the others (or the exit) waiting."""
    for name, stop in edges:
        try:
            await asyncio.wait_for(stop(), EDGE_STOP_TIMEOUT_S)
        except TimeoutError:
            log.error("did not stop in time; exiting without it", edge=name, timeout_s=EDGE_STOP_TIMEOUT_S)
        except Exception:
            log.exception("error while stopping; going on with the others", edge=name)
