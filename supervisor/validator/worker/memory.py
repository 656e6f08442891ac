"""The worker's memory limit (RLIMIT_DATA per job) and giving freed heap back."""

from __future__ import annotations

import contextlib
import ctypes
import resource

from supervisor.validator.worker.job import MiB

# --- memory -------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


class MemoryLimit:
    """The worker's soft RLIMIT_DATA: `limit_mb` plus what the current job maps."""

    def __init__(self, limit_mb: int | None) -> None:
        self.limit_bytes = limit_mb * MiB if limit_mb is not None else None
        self.limit_mb = limit_mb
        self.set(0)

    def set(self, mapped_bytes: int) -> None:
        if self.limit_bytes is None:
            return
        _, hard = resource.getrlimit(resource.RLIMIT_DATA)
        soft = self.limit_bytes + mapped_bytes
        if hard != resource.RLIM_INFINITY:
            soft = min(soft, hard)
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


def _trim_heap() -> None:
    with contextlib.suppress(AttributeError):
        _libc.malloc_trim(0)


def _is_out_of_memory(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or any(
        sign in text for sign in ("can't allocate memory", "cannot allocate memory", "bad_alloc")
    )
