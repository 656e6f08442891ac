"""Validating one request: checks cheapest first, the first failure is the verdict; failures told apart from rejections."""

from __future__ import annotations

import gc
import os
import re
import stat
import time
import traceback

from supervisor.checkpoints.entries import NotAFile, describe, kind_of, open_file
from supervisor.core.file_version import NO_VERSION, FileVersion
from supervisor.validator.protocol import EMPTY, ValidationRequest, Verdict
from supervisor.validator.worker.content import (
    Changed,
    Rejected,
    check_name_counters,
)
from supervisor.validator.worker.job import (
    FORMAT_LEGACY,
    FORMAT_SAFETENSORS,
    FORMAT_ZIP,
    LEGACY_MAGIC,
    ZIP_MAGIC,
    Job,
    _shorten,
)
from supervisor.validator.worker.memory import MemoryLimit, _is_out_of_memory, _trim_heap
from supervisor.validator.worker.safetensors_format import _check_safetensors
from supervisor.validator.worker.torch_load import _ANSI
from supervisor.validator.worker.torch_zip import _check_torch_legacy, _check_torch_zip

_ALLOCATION = re.compile(r"tried to allocate (\d+) bytes")


def _failure(exc: Exception, job: Job, memory: MemoryLimit | None) -> tuple[str, bool]:
    """(reason, validator_error) for an exception no check turned into a rejection.

    The readers (torch.load, the zip and safetensors parsers) turn what malformed content
    makes them raise into rejections with a cause; what still arrives here is either a
    known sign of malformed content (a nesting too deep, an allocation larger than the
    whole file: every tensor byte of a checkpoint lies in the file) or a failure of the
    validator itself, which says nothing about the file and is never a rejection: a
    bug of ours must not move a good checkpoint aside."""
    if _is_out_of_memory(exc):
        asked = _ALLOCATION.search(str(exc))
        if asked is not None and job.size and int(asked.group(1)) > job.size:
            return (
                f"malformed: it declares {int(asked.group(1))} bytes of tensor data, more than the whole "
                f"file ({job.size} bytes)",
                False,
            )
        limit = f" (limit {memory.limit_mb} MB)" if memory and memory.limit_mb else ""
        return f"validator ran out of memory{limit}", True
    if isinstance(exc, RecursionError):
        return "malformed: nested too deeply to be read", False
    traceback.print_exc()
    return f"validator error: {type(exc).__name__}: {_first_line(str(exc))}", True


def _first_line(text: str) -> str:
    lines = [line.strip() for line in _ANSI.sub("", text).splitlines() if line.strip()]
    return lines[0] if lines else "(no message)"


def validate(request: ValidationRequest, memory: MemoryLimit | None = None) -> Verdict:
    """Judge one file. Never raises: every failure is a verdict."""
    started = time.monotonic()
    job = Job(request)
    validator_error = changed = False
    try:
        _run(job, memory)
        reason = None
    except Rejected as exc:
        reason = exc.reason
    except Changed as exc:
        reason, changed = exc.reason, True
    except Exception as exc:
        reason, validator_error = _failure(exc, job, memory)
    finally:
        if job.fd >= 0:
            os.close(job.fd)
        if memory is not None:
            memory.set(0)
    gc.collect()
    _trim_heap()
    st = job.stat
    return Verdict(
        path=request.path,
        ok=reason is None,
        reason=None if reason is None else _shorten(reason),
        step=job.step,
        epoch=job.epoch,
        version=FileVersion.of(st) if st else NO_VERSION,
        checksum=job.checksum,
        format=job.format,
        seconds=round(time.monotonic() - started, 6),
        notes=tuple(job.notes),
        validator_error=validator_error,
        changed=changed,
        needs_globals=job.needs_globals if reason is None else (),
        shapes=job.shapes if reason is None else None,
    )


def _run(job: Job, memory: MemoryLimit | None) -> None:
    # lstat first: a FIFO named like a checkpoint is never opened (an open would wait
    # for a writer), and a link is never followed.
    try:
        mode = os.lstat(job.request.path).st_mode
    except FileNotFoundError:
        raise Rejected("not found") from None
    except OSError as exc:
        raise Rejected(f"cannot look at it: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        raise Rejected(describe(kind_of(mode), job.request.path))
    try:
        job.fd = open_file(job.request.path)
    except NotAFile as exc:
        raise Rejected(exc.reason) from None
    except FileNotFoundError:
        raise Rejected("not found") from None
    except OSError as exc:
        raise Rejected(f"cannot open: {exc.strerror}") from None
    job.stat = os.fstat(job.fd)
    # Whatever was found, it is only about this version if the file is still this version:
    # a rewrite that overlapped the read makes any finding (a torn zip, a short read) moot.
    try:
        _judge(job, memory)
    finally:
        _check_unchanged(job)


def _judge(job: Job, memory: MemoryLimit | None) -> None:
    check_name_counters(job.request)
    job.step, job.epoch = job.request.expected_step, job.request.expected_epoch
    if job.size == 0:
        raise Rejected(EMPTY)
    job.format = _detect(os.pread(job.fd, 16, 0))
    check = {FORMAT_ZIP: _check_torch_zip, FORMAT_LEGACY: _check_torch_legacy}.get(
        job.format, _check_safetensors
    )
    if memory is not None and job.format != FORMAT_LEGACY:
        memory.set(job.size)  # zips and safetensors are mapped, not read into memory
    try:
        check(job)
    except OSError as exc:
        raise Rejected(f"read error: {exc.strerror or exc}") from None


def _detect(head: bytes) -> str:
    if head.startswith(ZIP_MAGIC):
        return FORMAT_ZIP
    if head.startswith(LEGACY_MAGIC):
        return FORMAT_LEGACY
    if len(head) >= 9 and head[8:9] == b"{":
        return FORMAT_SAFETENSORS
    raise Rejected("unknown format: not a torch or safetensors checkpoint")


def _check_unchanged(job: Job) -> None:
    """The verdict must be about one version of the file: the one at the path now."""
    assert job.stat is not None
    before = FileVersion.of(job.stat)
    try:
        now = os.lstat(job.request.path)
        after_fd = os.fstat(job.fd)
    except OSError:
        raise Changed("file changed while it was read (removed)") from None
    if FileVersion.of(now) != before or FileVersion.of(after_fd) != before:
        raise Changed("file changed while it was read")
