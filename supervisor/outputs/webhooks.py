"""Webhooks: tell a person what happened (crash, hang, NaN, OOM, quarantine, give-up,
completion) over HTTP — a generic JSON POST, ntfy, or a Slack/Discord-compatible payload.

Sending never affects supervision: each POST runs in a thread with a timeout, failures are
logged (once per webhook until one succeeds) and dropped. Secrets (a URL or a bearer token
from the environment) are never logged: only the URL's scheme and host are. Each webhook
sends at most one message per `min_interval_s`; the messages it held back are counted in
the next one, and the final ones (gave_up, completed) always go out.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal
from urllib.parse import urlsplit

import structlog

from supervisor.ledger.text import Redactor

log = structlog.get_logger("supervisor.webhooks")

Format = Literal["json", "ntfy", "slack"]
FINAL = ("gave_up", "completed")


@dataclass
class Webhook:
    url: str
    format: Format
    events: frozenset[str]
    min_interval_s: float
    timeout_s: float
    token: str | None = None
    last_sent: float = -1e18
    held_back: int = 0
    failing: bool = False

    @property
    def shown(self) -> str:
        """The URL as it may be logged: scheme and host only."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.hostname or '?'}"


@dataclass(frozen=True)
class Message:
    run: str
    event: str  # an attempt's cause, "quarantined", "gave_up" or "completed"
    attempt: int
    text: str
    at: float = field(default_factory=time.time)


def request(hook: Webhook, message: Message, held_back: int) -> urllib.request.Request:
    text = f"[{message.run}] {message.text}"
    if held_back:
        text += f" (+{held_back} earlier message(s) held back by the rate limit)"
    headers = {"User-Agent": "train-supervisor"}
    if hook.token:
        headers["Authorization"] = f"Bearer {hook.token}"
    if hook.format == "ntfy":
        headers |= {"Title": f"train-supervisor: {message.run}: {message.event}", "Tags": message.event}
        if message.event not in ("completed", "quarantined"):
            headers["Priority"] = "high"
        return urllib.request.Request(hook.url, data=text.encode(), headers=headers, method="POST")  # noqa: S310 (http/https: checked at load)
    if hook.format == "slack":
        body: dict[str, object] = {"text": text, "content": text[:2000]}  # Slack reads text, Discord content
    else:
        body = {
            "run": message.run,
            "event": message.event,
            "attempt": message.attempt,
            "message": message.text,
            "held_back": held_back,
            "at": message.at,
        }
    headers["Content-Type"] = "application/json"
    data = json.dumps(body).encode()
    return urllib.request.Request(hook.url, data=data, headers=headers, method="POST")  # noqa: S310 (http/https: checked at load)


class Notifications:
    def __init__(self, hooks: list[Webhook]) -> None:
        self.hooks = hooks
        self._tasks: set[asyncio.Task[None]] = set()
        self._redact = Redactor(secret_values(hooks))

    def send(self, message: Message) -> None:
        """Queue the message for every webhook that wants it (from the event loop); no
        secret of any webhook is ever in what goes out."""
        loop = asyncio.get_running_loop()  # RuntimeError outside one, before any request is made
        message = replace(message, text=self._redact(message.text))
        now = time.monotonic()
        for hook in self.hooks:
            if message.event not in hook.events:
                continue
            if message.event not in FINAL and now - hook.last_sent < hook.min_interval_s:
                hook.held_back += 1
                continue
            held, hook.held_back, hook.last_sent = hook.held_back, 0, now
            task = loop.create_task(self._post(hook, request(hook, message, held)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _post(self, hook: Webhook, req: urllib.request.Request) -> None:
        try:
            await asyncio.to_thread(_urlopen, req, hook.timeout_s)
        except Exception as exc:  # never an error of the supervisor
            if not hook.failing:
                # The exception's text may hold the URL (its token path): only its kind,
                # or what a refused redirect says (scheme and host).
                error = str(exc) if isinstance(exc, RedirectRefused) else type(exc).__name__
                log.warning("webhook failed", webhook=hook.shown, error=error)
            hook.failing = True
        else:
            hook.failing = False

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Let the messages under way go out (at exit), for at most `timeout_s`."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)


class RedirectRefused(Exception):
    """The webhook answered with a redirect: never followed (a bearer token must not go
    to another host, and a redirected POST would lose its body)."""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: object,
        code: int,
        msg: str,
        headers: object,
        newurl: str,
    ) -> urllib.request.Request | None:
        parts = urlsplit(newurl)
        raise RedirectRefused(
            f"HTTP {code} redirect to {parts.scheme}://{parts.hostname or '?'}: not followed"
        )


_OPENER = urllib.request.build_opener(_NoRedirects)


def _urlopen(req: urllib.request.Request, timeout_s: float) -> None:
    with _OPENER.open(req, timeout=timeout_s) as response:
        response.read(1024)


def secret_values(hooks: Sequence[Webhook]) -> list[str]:
    """What must never be written anywhere: every webhook's URL and token."""
    return [value for hook in hooks for value in (hook.url, hook.token) if value]


def url_from(url: str | None, url_env: str | None, environ: Mapping[str, str]) -> str | None:
    if url:
        return url
    return environ.get(url_env or "") or None
