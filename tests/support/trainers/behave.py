"""A test trainer whose misbehaviour is chosen on the command line.

usage: behave.py MODE [ARGS...]; pid files and markers go where ARGS say.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path


def write(path: str, text: str) -> None:
    tmp = Path(f"{path}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def sleep_forever() -> None:
    while True:
        time.sleep(3600)


def grandchild(
    pid_file: str,
    *,
    ignore_term: bool = False,
    new_group: bool = False,
    new_session: bool = False,
    note_term: bool = False,
) -> None:
    """Fork a grandchild that sleeps; its pid goes to pid_file. With note_term it
    writes `<pid_file>.term` when SIGTERM arrives, then exits."""
    if os.fork() == 0:
        if ignore_term:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if note_term:
            signal.signal(signal.SIGTERM, lambda *_: (write(f"{pid_file}.term", "1"), os._exit(0)))
        if new_group:
            os.setpgid(0, 0)
        if new_session:
            os.setsid()
        write(pid_file, str(os.getpid()))
        sleep_forever()


def say_ignoring(*_: object) -> None:
    # The output pipe may be gone (its supervisor was killed): keep ignoring anyway.
    with contextlib.suppress(OSError):
        print("ignoring SIGTERM", flush=True)


def main(mode: str, args: list[str]) -> int:
    print(f"behave: {mode} pid={os.getpid()}", flush=True)
    if mode == "exit":
        print(f"exiting with {args[0]}", file=sys.stderr, flush=True)
        return int(args[0])
    if mode in ("sigkill", "sigsegv"):
        os.kill(os.getpid(), signal.SIGKILL if mode == "sigkill" else signal.SIGSEGV)
    if mode == "sleep":  # args: pid_file
        write(args[0], str(os.getpid()))
        sleep_forever()
    if mode == "ignore-term":  # args: ready_file
        signal.signal(signal.SIGTERM, say_ignoring)
        write(args[0], str(os.getpid()))
        sleep_forever()
    if mode == "fork":  # args: grandchild_pid_file, then flags; the leader sleeps
        grandchild(args[0], **{flag: True for flag in args[1:]})
        sleep_forever()
    if mode == "fork-then-exit":  # the leader exits 1, leaving the grandchild behind
        grandchild(args[0], **{flag: True for flag in args[1:]})
        while not Path(args[0]).exists():
            time.sleep(0.01)
        return 1
    if mode == "flood":  # args: total bytes
        chunk = (b"x" * 1023 + b"\n") * 64
        total = int(args[0])
        out = sys.stdout.buffer
        while total > 0:
            out.write(chunk[:total])
            total -= len(chunk)
        out.flush()
        return 0
    if mode == "lines":  # tqdm-like carriage returns, and a last line without newline
        sys.stdout.write("a\nb\r\nprogress 1\rprogress 2\rdone")
        return 0
    if mode == "crash-until":  # args: counter_file, n: exit 1 until started n times, then 0
        counter = Path(args[0])
        starts = len(counter.read_text().splitlines()) + 1 if counter.exists() else 1
        with counter.open("a") as fh:
            fh.write(f"{os.getpid()}\n")
        return 0 if starts >= int(args[1]) else 1
    raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
