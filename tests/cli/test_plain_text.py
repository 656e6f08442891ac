"""The status report's plain text: a trainer's words cannot drive the terminal, the last
column folds to the width, and styles appear only on a terminal that wants them."""

from __future__ import annotations

import contextlib
import os
import sys
import unicodedata
from collections.abc import Iterator

import pytest

from supervisor.cli.plain_text import BOLD, RESET, styled, table, visible


@pytest.mark.parametrize(
    "hostile",
    [
        "\x1b[2J\x1b[H",  # clear the screen, cursor home
        "\x1b]0;owned\x07",  # set the window title
        "\x9b31m",  # the one-byte CSI
        "ok\rFAKE",  # a carriage return that overwrites what came before
        "two\nlines",
        "tab\there",
        "\x00\x7f",
        "abc\u202edcba",  # right-to-left override: the rest reads backwards
        "a\u200bb\u2066c",  # zero-width space, a bidi isolate
        "line\u2028separator",
    ],
)
def test_no_control_or_invisible_character_reaches_the_terminal(hostile: str) -> None:
    shown = visible(f"said: {hostile}")
    assert not [c for c in shown if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")]
    assert shown.startswith("said: ")


def test_printable_text_is_left_as_it_is() -> None:
    text = "loading [/data/ljs] [bold]done — step 1200, loss=0.31 ✓"
    assert visible(text) == text


def test_the_last_column_folds_to_the_width_and_the_others_stay_aligned() -> None:
    detail = "word " * 40
    lines = table(("#", "cause", "detail"), [("1", "crash", detail), ("12", "oom-cuda", "short")], 60)
    assert all(len(line) <= 60 for line in lines)
    start = lines[0].index("detail")
    assert lines[1][start:].startswith("word")
    continued = [line for line in lines[2:] if not line[0].strip()]
    assert continued, "the long detail folded onto more lines"
    assert all(line[:start].strip() == "" and line[start] != " " for line in continued)
    assert lines[-1].split() == ["12", "oom-cuda", "short"]
    assert " ".join(" ".join(line[start:] for line in lines[1:-1]).split()) == detail.strip()


def test_a_narrow_terminal_still_gets_a_readable_last_column() -> None:
    lines = table(("name", "detail"), [("x" * 50, "a b c d e f g h i j k l m n o p q r s t u v w x y z")], 40)
    assert all(len(line) - 52 <= 20 for line in lines)


@contextlib.contextmanager
def terminal_stdout(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Standard output on a real pseudo-terminal (set inside the test: pytest's capture
    puts its own back between a fixture's setup and the test)."""
    leader, follower = os.openpty()
    try:
        with os.fdopen(follower, "w") as tty, monkeypatch.context() as patch:
            patch.setattr(sys, "stdout", tty)
            yield
    finally:
        os.close(leader)


def test_styles_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    with terminal_stdout(monkeypatch):
        assert styled("running", BOLD) == f"{BOLD}running{RESET}"
        monkeypatch.setenv("NO_COLOR", "1")
        assert styled("running", BOLD) == "running"


def test_no_styles_into_a_pipe_or_file() -> None:
    assert not sys.stdout.isatty()  # pytest captures it
    assert styled("running", BOLD) == "running"
