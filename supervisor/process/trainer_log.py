"""Where the trainer's output goes: a size-rotated log file and line handlers.

Bytes are written to the log as they come (tqdm's carriage returns included); line
handlers see decoded lines split on newlines and carriage returns, so progress bars
can be parsed. A line longer than MAX_LINE_BYTES is handed over in pieces.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import structlog

from supervisor.signals.crash_detail import plain

MAX_LINE_BYTES = 64 * 1024

LineHandler = Callable[[str, str], None]  # (stream, line)


class RotatingLog:
    """Append-only log that rotates at `max_bytes`: trainer.log -> trainer.log.1 -> ..."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: BinaryIO = path.open("ab")
        self._size = self._file.tell()

    def write(self, data: bytes) -> None:
        while data:
            room = self.max_bytes - self._size
            if room <= 0:
                self._rotate()
                continue
            piece, data = data[:room], data[room:]
            self._file.write(piece)
            self._size += len(piece)
        self._file.flush()

    def _rotate(self) -> None:
        self._file.close()
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
        else:
            for n in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{n}")
                if older.exists():
                    os.replace(older, self.path.with_name(f"{self.path.name}.{n + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._file = self.path.open("ab")
        self._size = 0

    def close(self) -> None:
        self._file.close()


class OutputSink:
    """Receives raw chunks per stream; writes them to the log and feeds line handlers."""

    def __init__(self, log: RotatingLog | None, handlers: list[LineHandler]) -> None:
        self.log = log
        self.handlers = handlers
        self.bytes_seen = 0
        self.log_error: OSError | None = None
        self._partial: dict[str, bytes] = {}
        self._handler_failed = False  # reported once

    def write(self, stream: str, data: bytes) -> None:
        self.bytes_seen += len(data)
        self.write_log(data)
        if not self.handlers:
            return
        buffer = self._partial.pop(stream, b"") + data
        lines = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        rest = lines.pop()
        for line in lines:
            self._emit(stream, line)
        while len(rest) > MAX_LINE_BYTES:
            self._emit(stream, rest[:MAX_LINE_BYTES])
            rest = rest[MAX_LINE_BYTES:]
        if rest:
            self._partial[stream] = rest

    def write_log(self, data: bytes) -> None:
        """Append to the log only. A full disk must not stop the draining (the trainer
        would block on its pipe), so errors are reported once and the data dropped."""
        if self.log is None:
            return
        try:
            self.log.write(data)
        except OSError as exc:
            if self.log_error is None:
                structlog.get_logger("supervisor.output").error(
                    "cannot write the trainer log; its output is dropped until this clears",
                    path=str(self.log.path),
                    error=str(exc),
                )
            self.log_error = exc
        else:
            self.log_error = None

    def close_stream(self, stream: str) -> None:
        rest = self._partial.pop(stream, b"")
        if rest:
            self._emit(stream, rest)

    def forget_partial_lines(self) -> None:
        """Drop unfinished lines (a new attempt must not inherit the last one's fragment)."""
        self._partial.clear()

    def _emit(self, stream: str, line: bytes) -> None:
        # Handlers read lines as a person would: tqdm's cursor moves and colours are out
        # (the trainer's log keeps the bytes as they came).
        text = plain(line.decode("utf-8", errors="replace"))
        for handler in self.handlers:
            try:
                handler(stream, text)
            except Exception:  # a line handler must never stop the draining
                if not self._handler_failed:
                    structlog.get_logger("supervisor.output").exception("a line handler failed")
                self._handler_failed = True
