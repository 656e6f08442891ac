"""What an attempt's end says beside its exit status: the exception of the last traceback
the trainer printed, when there is one, else its last line that is not a continuation;
terminal control sequences (colours, tqdm's cursor moves) taken out.

Pure text work on the output's tail: a launcher like Hydra prints a closing hint after
the traceback ("Set the environment variable HYDRA_FULL_ERROR=1 ..."), and tqdm redraws
its bar with escape codes; neither is the cause a user wants to read.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# CSI (ESC [ ... final byte), OSC (ESC ] ... BEL or ESC \), and two-byte ESC sequences.
_CONTROL_SEQUENCE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]")
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
TRACEBACK = "Traceback (most recent call last):"
# What a launcher raises when its child failed (accelerate launch, torchrun): the child's
# own traceback, printed before it, holds the cause.
LAUNCHER_ERRORS = re.compile(
    r"^(?:subprocess\.CalledProcessError|torch\.distributed\.elastic\.\S*ChildFailedError)\b"
)
# A launcher's per-process prefix (torchrun: `[rank0]: ...`), in front of any line.
RANK_PREFIX = re.compile(r"^\[[a-z]*\d+\]:\s?")
# An exception line without its traceback's header (which scrolled out of the tail).
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception)\b(?::|$)")
HEADLESS_WITHIN = 10  # lines from the end an exception line without its header is taken from
DETAIL_MAX_CHARS = 300


def plain(line: str) -> str:
    """The line as a person reads it: escape sequences and control characters gone."""
    return _CONTROL_CHARS.sub("", _CONTROL_SEQUENCE.sub("", line)).rstrip()


def crash_detail(lines: Sequence[str]) -> str:
    """`error: <exception line>` or `last output: <line>`; "" when nothing was printed."""
    shown = [text for line in lines if (text := RANK_PREFIX.sub("", plain(line))).strip()]
    if not shown:
        return ""
    error = _last_exception(shown)
    if error is not None:
        return f"error: {error[:DETAIL_MAX_CHARS]}"
    return f"last output: {_last_statement(shown)[:DETAIL_MAX_CHARS]}"


def _last_exception(lines: Sequence[str]) -> str | None:
    """The line naming the exception of the last traceback: the first line after its
    header that is not indented (frames and source lines are)."""
    # Anywhere in the line: a progress bar drawn without a newline runs into it.
    starts = [i for i, line in enumerate(lines) if TRACEBACK in line]
    if not starts:  # only just before the end: an older one may have been survived
        found = [line.strip() for line in lines[-HEADLESS_WITHIN:] if EXCEPTION_LINE.match(line)]
        return found[-1] if found else None
    found = [error for start in starts if (error := _exception_after(lines, start)) is not None]
    causes = [error for error in found if not LAUNCHER_ERRORS.match(error)]
    chosen = causes or found
    return chosen[-1] if chosen else None


def _exception_after(lines: Sequence[str], start: int) -> str | None:
    for line in lines[start + 1 :]:
        if not line[:1].isspace():
            return line.strip()
    return None


def _last_statement(lines: Sequence[str]) -> str:
    """The last line that starts a message: a warning's indented source line (or any
    other continuation) stands for the line it continues."""
    for line in reversed(lines):
        if not line[:1].isspace():
            return line.strip()
    return lines[-1].strip()
