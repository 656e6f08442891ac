"""What the user is told, in one place: a log line, an event in the ledger, and a webhook for the loud ones."""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

from supervisor.core import Cause, RecordAttemptEnd
from supervisor.ledger import Ledger
from supervisor.ledger.text import readable
from supervisor.outputs.logs import FirstErrorLog
from supervisor.outputs.webhooks import Message, Notifications

log = structlog.get_logger("supervisor")

# Events every webhook hears of (besides attempt ends and low disk space warnings); a
# webhook's `events` then picks among them.
LOUD_EVENTS = ("quarantined", "gave_up", "completed", "final_state_unsettled", "saves_not_landing")
WEBHOOK_TEXT_CHARS = 1000

# (kind, level, message): what an edge that reports outside a decision is handed.
Report = Callable[[str, str, str], None]


def loud(kind: str, level: str) -> bool:
    return kind in LOUD_EVENTS or (kind == "disk_space" and level == "warning")


class Reporter:
    """The one reporter. `ledger` None: a dry command, told in the log only. A webhook
    never stands in the way of the ledger, nor the ledger's full disk in the log's."""

    def __init__(
        self,
        ledger: Ledger | None,
        *,
        attempt: Callable[[], int],
        run_name: str = "",
        webhooks: Notifications | None = None,
    ) -> None:
        self.ledger = ledger
        self._attempt = attempt
        self.run_name = run_name
        self.webhooks = webhooks
        self.webhook_errors = FirstErrorLog("a webhook message could not be queued")

    def report(
        self, kind: str, level: str, message: str, *, attempt: int | None = None, commit: bool = True
    ) -> None:
        """Tell it everywhere it goes. `commit` False: inside a decision, whose end commits."""
        n = attempt if attempt is not None else self._attempt()
        getattr(log, level)(message, kind=kind, attempt=n)
        if self.ledger is not None:
            self.ledger.add_event(time.time(), n, kind, level, message)
            if commit:
                self.ledger.commit()
        if self.webhooks is not None and loud(kind, level):
            self._send(Message(self.run_name, kind, n, readable(message)[:WEBHOOK_TEXT_CHARS]))

    def attempt_ended(self, end: RecordAttemptEnd) -> None:
        """An attempt's end goes to webhooks (the core's note of it is reported already);
        completion is told by its own event, and a stop was asked for."""
        if self.webhooks is None or end.cause in (Cause.COMPLETED, Cause.STOPPED):
            return
        how = end.status.describe() if end.status is not None else "no exit status"
        detail = f"; {end.detail}" if end.detail else ""
        text = f"attempt {end.attempt} ended: {end.cause.value} ({how}){detail}"
        self._send(Message(self.run_name, end.cause.value, end.attempt, text[:WEBHOOK_TEXT_CHARS]))

    def _send(self, message: Message) -> None:
        """Hand a message to the webhooks; whatever goes wrong there stays there: the caller
        (a decision, a preparation) goes on."""
        assert self.webhooks is not None
        try:
            self.webhooks.send(message)
        except Exception:
            self.webhook_errors.exception()
