#!/usr/bin/env python3
"""Per-call cost of supervisor.client.heartbeat() inside a training loop.

In this one run, each over --calls calls (best of --repeats):

  env unset      outside the supervisor: a call must do nothing;
  rate-limited   the typical case: a receiver listens and the calls come far faster than
                 MIN_INTERVAL_S, so all but about 4 a second only read the clock;
  send path      client._send() directly, one datagram per call: what the first call, a
                 non-finite loss, or a call after MIN_INTERVAL_S costs.

Each is shown in µs/call and as a multiple of a trivial Python function called the same
way (keyword arguments, same loop), measured in the same run, so the ratio carries across
machines. The receiver is a separate process that drains the socket and says how many
datagrams reached it (a send path faster than the drain fills the queue: the rest were
dropped with EAGAIN, which is part of what is measured).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _claims import claim, exit_status

from supervisor import client
from supervisor.client import ATTEMPT_MARKER_ENV, HEARTBEAT_ENV, heartbeat

TARGET_RATE_LIMITED_US = 10.0

DRAIN = """
import socket, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind(sys.argv[1])
print("ready", flush=True)
count = 0
while sock.recv(4096) != b"stop":
    count += 1
print(count, flush=True)
"""


def nothing(step: int | None = None, loss: float | None = None) -> None:
    pass


def per_call_us(function: Callable[..., None], calls: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter_ns()
        for step in range(calls):
            function(step=step, loss=0.5)
        best = min(best, (time.perf_counter_ns() - start) / calls / 1000)
    return best


class Drain:
    """The receiving end, in its own process so it does not share our GIL."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.proc = subprocess.Popen(
            [sys.executable, "-c", DRAIN, str(path)], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"

    def received(self) -> int:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"stop", str(self.path))  # blocking: waits for room in a full queue
        out, _ = self.proc.communicate(timeout=30)
        self.path.unlink()
        return int(out)


def point_at(path: Path | None) -> None:
    if path is None:
        os.environ.pop(HEARTBEAT_ENV, None)
    else:
        os.environ[HEARTBEAT_ENV] = str(path)
    client._forget()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    os.environ[ATTEMPT_MARKER_ENV] = "bench:1:0123abcd"
    path = Path(tempfile.mkdtemp(prefix="hb-bench-")) / "hb.sock"

    baseline = per_call_us(nothing, args.calls, args.repeats)
    point_at(None)
    unset = per_call_us(heartbeat, args.calls, args.repeats)
    drain = Drain(path)
    point_at(path)
    limited = per_call_us(heartbeat, args.calls, args.repeats)
    limited_received = drain.received()
    drain = Drain(path)
    send = per_call_us(client._send, args.calls, args.repeats)
    send_received = drain.received()
    path.parent.rmdir()

    sent = args.calls * args.repeats
    print(f"heartbeat() cost, {args.calls} calls, best of {args.repeats}, {sys.version.split()[0]}")
    print(f"  {'':28}{'µs/call':>9}{'x trivial call':>16}")
    print(f"  {'trivial function call':28}{baseline:9.3f}{1:16.1f}")
    rows = [
        ("env unset", unset, ""),
        ("rate-limited (typical)", limited, f"{limited_received} datagram(s) sent for {sent} calls"),
        ("send path (_send)", send, f"{send_received} of {sent} datagrams received"),
    ]
    for name, cost, note in rows:
        print(f"  {name:28}{cost:9.3f}{cost / baseline:16.1f}   {note}".rstrip())
    claim("rate-limited heartbeat(), µs per call", limited, TARGET_RATE_LIMITED_US)
    return exit_status()


if __name__ == "__main__":
    sys.exit(main())
