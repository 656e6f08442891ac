"""A stop that takes too long says why, and the process exits all the same.

- Each edge's stop is bounded: the supervisor goes on without the one that hangs, naming it.
- Once the trainer's stop has run past its grace by STOP_OVERRUN_S, the stacks of every
  thread go to stderr (the journal, under systemd), from a thread of the interpreter's
  own, so that even a stuck event loop shows where it is.
- Once the daemon's teardown is over, the process has EXIT_GRACE_S to end: a thread left
  behind (a stat on a dead network share, a join that never returns) would otherwise keep
  the interpreter from exiting. Past that, the stacks go to stderr and it exits anyway.

All of it fits in the systemd units' TimeoutStopSec (grace_s + STOP_MARGIN_S), so that
systemd's SIGKILL never comes first (a test ties the numbers together).
"""

from __future__ import annotations

import asyncio
import faulthandler
import os
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence

import structlog

log = structlog.get_logger("supervisor")

EDGE_STOP_TIMEOUT_S = 12.0  # one edge's stop (watcher and validator, sources, outputs)
STOP_OVERRUN_S = 40.0  # past the trainer's grace period: a stop that takes longer is stuck
# After the teardown: what is still under way in threads (a checkpoint copy, a webhook's
# last post, a stuck call) has this long before the process exits without it.
EXIT_GRACE_S = 20.0


class StopOverrun:
    """Armed when the trainer's stop begins; the daemon's end disarms it."""

    def __init__(self) -> None:
        self._timer: asyncio.TimerHandle | None = None

    def arm(self, grace_s: float) -> None:
        """Once per run: the trainer has `grace_s` to go, then SIGKILL; the rest is ours."""
        if self._timer is not None:
            return
        after_s = grace_s + STOP_OVERRUN_S
        dumping = True
        try:
            faulthandler.dump_traceback_later(after_s, file=sys.stderr)
        except Exception:  # no usable stderr: None, closed, or not a file
            dumping = False
        self._timer = asyncio.get_running_loop().call_later(after_s, _still_stopping, after_s, dumping)

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            faulthandler.cancel_dump_traceback_later()
            self._timer = None


def _still_stopping(after_s: float, dumping: bool) -> None:
    where = "the stacks of its threads are on stderr" if dumping else "stderr is unusable for its stacks"
    log.error(
        f"the supervisor is still stopping; {where} (please include them in a bug report)", after_s=after_s
    )


async def stop_edges(edges: Sequence[tuple[str, Callable[[], Awaitable[None]]]]) -> list[str]:
    """Stop each edge in turn, at most EDGE_STOP_TIMEOUT_S each; one that hangs or fails
    is named in the log and left behind, never keeps the others (or the exit) waiting.
    Returns the names of those left behind."""
    left = []
    for name, stop in edges:
        task = asyncio.ensure_future(stop())
        done, _ = await asyncio.wait({task}, timeout=EDGE_STOP_TIMEOUT_S)
        if not done:
            task.cancel()  # not awaited: a stop that ignores its cancellation stays behind
            task.add_done_callback(_retrieved)
            left.append(name)
            log.error("did not stop in time; exiting without it", edge=name, timeout_s=EDGE_STOP_TIMEOUT_S)
        elif not task.cancelled() and (error := task.exception()) is not None:
            log.error("error while stopping; going on with the others", edge=name, error=repr(error))
    return left


def _retrieved(task: asyncio.Future[None]) -> None:
    """A stop left behind that fails later: logged, not "never retrieved"."""
    if not task.cancelled() and (error := task.exception()) is not None:
        log.error("a stop left behind failed", error=repr(error))


def exit_within(grace_s: float, code: int) -> None:
    """From now on the process has `grace_s` to exit; past that, every thread's stack goes
    to stderr and it exits with `code` (os._exit: nothing left may keep it). Call it once
    the supervisor's teardown is over and the ledger has what it must keep."""

    def backstop() -> None:
        threading.Event().wait(grace_s)
        try:
            sys.stderr.write(
                f"train-supervisor: threads still running {grace_s:g}s after the teardown (a checkpoint "
                "copy, a webhook's last post, or a stuck call); exiting without them. Their stacks:\n"
            )
            faulthandler.dump_traceback(file=sys.stderr)
            sys.stderr.flush()
        except Exception:  # noqa: S110 (no usable stderr: exit all the same)
            pass
        os._exit(code)

    threading.Thread(target=backstop, name="exit-backstop", daemon=True).start()
