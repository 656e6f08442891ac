"""One validation job: the open file, what it asks, and the constants every check shares."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from supervisor.validator.protocol import ValidationRequest
from supervisor.validator.worker.content import (
    Content,
)

MiB = 1 << 20
ZIP_MAGIC = b"PK\x03\x04"
# torch.save's legacy format: pickle protocol 2, then LONG1 of torch's magic number.
LEGACY_MAGIC = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
REASON_MAX_CHARS = 300
FORMAT_ZIP = "torch-zip"
FORMAT_LEGACY = "torch-legacy"
FORMAT_SAFETENSORS = "safetensors"


# --- the job ------------------------------------------------------------------------


@dataclass
class Job:
    request: ValidationRequest
    fd: int = -1
    stat: os.stat_result | None = None
    format: str | None = None
    step: int | None = None
    epoch: int | None = None
    checksum: str | None = None
    notes: list[str] = field(default_factory=list)
    shapes: dict[str, list[int]] | None = None
    needs_globals: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        return self.stat.st_size if self.stat is not None else 0

    @property
    def opened(self) -> str:
        """The file that was opened, by a name no one can swap: what torch and the
        safetensors library open (they take paths), never the path itself again."""
        return f"/proc/self/fd/{self.fd}"

    def take(self, content: Content) -> None:
        self.step, self.epoch, self.shapes = content.step, content.epoch, content.shapes


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= REASON_MAX_CHARS else text[: REASON_MAX_CHARS - 3] + "..."
