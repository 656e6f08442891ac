"""Optional Prometheus metrics: the text exposition format (version 0.0.4) on
`http://<bind>:<port>/metrics`, served from the daemon's event loop ([metrics] in the
config; off by default, loopback addresses only: there is no authentication).
"""

from __future__ import annotations

import asyncio
import bisect
import math
from collections.abc import Callable, Iterable, Mapping, Sequence

import structlog

from supervisor.core import Cause, Phase
from supervisor.outputs.logs import FirstErrorLog
from supervisor.outputs.status_socket import Snapshot, close_server

log = structlog.get_logger("supervisor.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "train_supervisor_"
# Causes after which the supervisor relaunches (or gives up): not a completion or a stop.
RESTART_CAUSES = tuple(c.value for c in Cause if c not in (Cause.COMPLETED, Cause.STOPPED))
VALIDATION_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
MAX_REQUEST_BYTES = 8192
READ_TIMEOUT_S = 5.0
WRITE_TIMEOUT_S = 5.0

Sample = tuple[str, Mapping[str, str], float]


def exposition(snapshot: Snapshot, validation_times: Sequence[float]) -> str:
    """Every metric of the run, in the text format."""
    run = {"run": snapshot.run}
    restarts = [
        (f"{PREFIX}restarts_total", {**run, "cause": cause}, snapshot.restarts_by_cause.get(cause, 0))
        for cause in RESTART_CAUSES
    ]
    states = [(f"{PREFIX}state", {**run, "state": p.value}, int(p.value == snapshot.phase)) for p in Phase]
    lines = [
        *_family("restarts_total", "counter", "Attempts that ended with this cause.", restarts),
        *_gauge("attempt", "The current (or last) attempt, counting from 1.", run, snapshot.attempt),
        *_gauge(
            "attempts_without_progress",
            "Consecutive attempts that ended without progress.",
            run,
            snapshot.attempts_without_progress,
        ),
        *_family("state", "gauge", "1 for the supervisor's current phase.", states),
        *_gauge("start_time_seconds", "When the supervisor started (Unix time).", run, snapshot.started_at),
        *_gauge(
            "last_verified_step",
            "The newest verified checkpoint step (absent until one is verified).",
            run,
            snapshot.best_step,
        ),
        *_gauge(
            "heartbeat_age_seconds",
            "Seconds since the trainer's last sign of progress (absent unless it runs and gave one).",
            run,
            snapshot.last_progress_age_s if snapshot.phase == Phase.RUNNING.value else None,
        ),
        *_histogram(
            "checkpoint_validation_seconds",
            "How long checkpoint validations took (every verdict in the ledger).",
            run,
            validation_times,
        ),
    ]
    return "\n".join(lines) + "\n"


def _gauge(name: str, text: str, labels: Mapping[str, str], value: float | None) -> list[str]:
    samples = [] if value is None else [(PREFIX + name, labels, value)]
    return _family(name, "gauge", text, samples)


def _histogram(name: str, text: str, labels: Mapping[str, str], values: Sequence[float]) -> list[str]:
    ordered = sorted(values)
    buckets: list[Sample] = [
        (f"{PREFIX}{name}_bucket", {**labels, "le": _number(bound)}, bisect.bisect_right(ordered, bound))
        for bound in VALIDATION_BUCKETS_S
    ]
    samples = [
        *buckets,
        (f"{PREFIX}{name}_bucket", {**labels, "le": "+Inf"}, len(ordered)),
        (f"{PREFIX}{name}_sum", labels, math.fsum(ordered)),
        (f"{PREFIX}{name}_count", labels, len(ordered)),
    ]
    return _family(name, "histogram", text, samples)


def _family(name: str, kind: str, text: str, samples: Iterable[Sample]) -> list[str]:
    help_text = text.replace("\\", "\\\\").replace("\n", "\\n")
    lines = [f"# HELP {PREFIX}{name} {help_text}", f"# TYPE {PREFIX}{name} {kind}"]
    return lines + [f"{sample}{_labels(labels)} {_number(value)}" for sample, labels, value in samples]


def _labels(labels: Mapping[str, str]) -> str:
    def escaped(value: str) -> str:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return "{" + ",".join(f'{key}="{escaped(value)}"' for key, value in labels.items()) + "}"


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


class MetricsServer:
    """GET /metrics → `render()`; anything else gets 404 or 405. One request per
    connection; a client that is slow to send or to read is cut off."""

    def __init__(self, host: str, port: int, render: Callable[[], str]) -> None:
        self.host = host
        self.port = port
        self.render = render
        self.errors = FirstErrorLog("error while serving metrics", "supervisor.live")
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        """Never raises: supervision goes on without metrics."""
        try:
            self._server = await asyncio.start_server(
                self._serve, self.host, self.port, limit=MAX_REQUEST_BYTES, reuse_address=True
            )
        except OSError as exc:
            log.warning("metrics cannot be served", address=f"{self.host}:{self.port}", error=str(exc))
            return
        log.info("serving metrics", url=f"http://{_host(self.host)}:{self.port}/metrics")

    async def stop(self) -> None:
        if self._server is not None:
            await close_server(self._server, self._clients)
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.add(writer)
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_S)
            writer.write(self._answer(head))
            await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT_S)
            writer.close()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, TimeoutError):
            writer.transport.abort()  # gone, too long, or too slow: no answer owed
        except Exception:
            self.errors.exception()
            writer.transport.abort()
        finally:
            self._clients.discard(writer)

    def _answer(self, head: bytes) -> bytes:
        method, target = request_line(head)
        if target.split("?", 1)[0] != "/metrics":
            return response(404, "Not Found", b"not found: the metrics are at /metrics\n")
        if method not in ("GET", "HEAD"):
            return response(405, "Method Not Allowed", b"use GET\n", allow="GET, HEAD")
        body = self.render().encode()
        return response(200, "OK", body, content_type=CONTENT_TYPE, head_only=method == "HEAD")


def request_line(head: bytes) -> tuple[str, str]:
    """(method, target) of an HTTP request head; empty strings where it is malformed."""
    parts = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
    return (parts[0], parts[1]) if len(parts) == 3 else ("", "")


def response(
    code: int,
    reason: str,
    body: bytes,
    *,
    content_type: str = "text/plain; charset=utf-8",
    allow: str | None = None,
    head_only: bool = False,
) -> bytes:
    headers = [
        f"HTTP/1.1 {code} {reason}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *([f"Allow: {allow}"] if allow else []),
    ]
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + (b"" if head_only else body)


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
