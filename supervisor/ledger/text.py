"""What the ledger can store, whatever the disk and the trainer hand us.

- Paths are keys: a file name that is not UTF-8 (Python spells its bytes as lone
  surrogates) cannot be bound as SQLite text, so such a path is stored as
  `bytes:<base64 of its bytes>`, which no absolute path begins with, and read back as
  the very same path.
- Free text (messages, the trainer's last line) is stored readably: undecodable bytes
  as `\\xNN`, and every known secret replaced by `<redacted>`.
- Counters beyond SQLite's 64-bit integers are no counters: stored as NULL.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable

BYTES_PREFIX = "bytes:"
INT64 = (-(1 << 63), (1 << 63) - 1)
REDACTED = "<redacted>"
MIN_SECRET_CHARS = 6  # shorter values would blank out ordinary words


def path_in(path: str) -> str:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return BYTES_PREFIX + base64.b64encode(os.fsencode(path)).decode("ascii")
    return path


def path_out(stored: str) -> str:
    if stored.startswith(BYTES_PREFIX):
        return os.fsdecode(base64.b64decode(stored[len(BYTES_PREFIX) :]))
    return stored


def readable(text: str) -> str:
    """`text` as storable, printable UTF-8: undecodable bytes become `\\xNN`."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def counter(value: int | None) -> int | None:
    if value is None or not INT64[0] <= value <= INT64[1]:
        return None
    return value


class Redactor:
    """Replaces secrets (webhook URLs and tokens) wherever they would be written."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = sorted({s for s in secrets if len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text
