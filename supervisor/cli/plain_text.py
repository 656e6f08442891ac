"""Text for a terminal without a rendering library: aligned rows, a table whose last column
folds to the terminal's width, bold and red only on a terminal that wants colour, and
control characters made visible, so that a trainer's words cannot move the cursor.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import textwrap
import unicodedata
from collections.abc import Sequence

CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
INVISIBLE = ("Cf", "Zl", "Zp")  # format characters (bidi, zero-width), line/paragraph separators
BOLD, RED, RESET = "\x1b[1m", "\x1b[31m", "\x1b[0m"
MIN_LAST_COLUMN = 20


def visible(text: str) -> str:
    """`text` with its control characters (escape sequences, carriage returns, tabs,
    newlines) written as `\\xNN`, and the invisible ones that reorder or hide text (bidi
    overrides, zero-width characters, line separators) as `\\uNNNN`: one line that
    prints as it reads."""
    shown = CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text.replace("\n", "\\n"))
    return "".join(_shown(c) for c in shown) if not shown.isascii() else shown


def _shown(char: str) -> str:
    return f"\\u{ord(char):04x}" if unicodedata.category(char) in INVISIBLE else char


def colour() -> bool:
    """Standard output is a terminal and NO_COLOR is not set (https://no-color.org)."""
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def styled(text: str, *styles: str) -> str:
    return "".join(styles) + text + RESET if styles and colour() else text


def width() -> int:
    """The terminal's width (COLUMNS where set), 80 when it cannot be told."""
    return shutil.get_terminal_size((80, 24)).columns


def table(header: Sequence[str], body: Sequence[Sequence[str]], total_width: int) -> list[str]:
    """Columns padded to their widest cell; the last column folds to what is left of
    `total_width` (never narrower than MIN_LAST_COLUMN)."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *body, strict=True)]
    leading = sum(widths[:-1]) + 2 * (len(widths) - 1)
    last = max(MIN_LAST_COLUMN, total_width - leading)
    lines = []
    for row in [header, *body]:
        folded = textwrap.wrap(row[-1], last, break_long_words=True) or [""]
        cells = [f"{cell:<{w}}" for cell, w in zip(row[:-1], widths, strict=False)]
        lines.append("  ".join([*cells, folded[0]]).rstrip())
        lines += [(" " * leading + more).rstrip() for more in folded[1:]]
    return lines
