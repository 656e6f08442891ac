"""The checkpoint validator worker: judges one checkpoint file at a time, in its own
process, because it imports torch and because a broken or hostile file may only ever
take down this process (the daemon imports `supervisor.validator.client`, never this).

    python -m supervisor.validator.worker.serve --serve [--memory-limit-mb N] [--parent-pid P]
        JSON lines until EOF: {"id": n, "request": {...}} in on stdin,
        {"id": n, "verdict": {...}} out on stdout. This is what ValidatorClient runs.
    python -m supervisor.validator.worker.serve PATH [--step-key K] [--required-key K ...]
        one file; its verdict as JSON on stdout; exit status 0 if ok, 1 if rejected.

Checks, cheapest first; the first failure is the verdict:
  1. the file exists, is a regular file and is not empty;
  2. the format by its magic bytes: torch zip, legacy (pre-1.6) torch.save, safetensors;
  3. structure. Torch zip: central directory, every local header, records stored
     uncompressed and inside the file, the small records' (data.pkl ...) CRC-32.
     Safetensors: header length, JSON, every tensor's dtype x shape equal to its byte
     range, the ranges tiling the data area exactly (what the safetensors library
     demands too, and it is asked as well);
  4. torch.load(weights_only=True, mmap=True for zips, map_location="cpu") inside
     safe_globals(allowed_globals). Never an unrestricted unpickle, no fallback: a global
     that is not allowed is a rejection naming it;
  5. content: required keys, step and epoch (int or 0-dim tensor) equal to the name's;
  6. data, in one pass over every tensor byte: each record's CRC-32 against the central
     directory and every floating-point value finite. Each 1 MiB slice is read into a
     per-thread buffer and CRC'd and summed while it sits in L2 (every byte is read
     once); units go to a thread pool (the CRC and torch's sum release the GIL) and
     unit CRCs are combined with crc32_combine, so one huge tensor still uses every core.
     torch's own mapping of the file only tells each record's dtype and tensor names;
  7. the path still names the file that was opened, unchanged (inode, size, mtime).

Decisions:
  - Finiteness: the plain sum of a slice (fp32 accumulation inside torch's kernels) is
    finite if every element is (IEEE: NaN and Inf propagate, Inf - Inf is NaN); only a
    non-finite sum is checked element by element, which also names the tensor and tells
    NaN from Inf, and tells an overflowing sum (or values outside any tensor) from damage.
  - CRCs disabled by the writer (torch.serialization.set_crc32_options(False) stores 0
    for every record): record data cannot be verified, the verdict stays ok with a note.
    Rejecting would reject every checkpoint of such a trainer forever.
  - Legacy files have no checksums and cannot be mmapped: they are loaded into memory
    (and so count in full against the memory limit); the checksum is the whole file's.
  - Memory limit: RLIMIT_AS counts every mapping (torch alone reserves ~600 MB, and an
    mmapped checkpoint counts in full), so no fixed value both allows big files and
    means anything. RLIMIT_DATA counts private writable memory: heap, anonymous maps,
    thread stacks, and also the MAP_PRIVATE mapping torch.load(mmap=True) makes of the
    file. So each job sets the soft RLIMIT_DATA to the limit plus the size of the file
    it maps: the file's pages are page cache, not worker memory; all else counts.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import importlib
import json
import math
import os
import pickle
import re
import resource
import signal
import stat
import struct
import sys
import threading
import time
import traceback
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch

from supervisor.checkpoints.entries import NotAFile, describe, kind_of, open_file
from supervisor.validator.client import EMPTY, ValidationRequest, Verdict
from supervisor.validator.worker.content import (
    Changed,
    Content,
    Rejected,
    check_content,
    check_name_counters,
    lookup,
)

__all__ = ["Rejected", "lookup", "main", "validate"]

MiB = 1 << 20
ZIP_MAGIC = b"PK\x03\x04"
# torch.save's legacy format: pickle protocol 2, then LONG1 of torch's magic number.
LEGACY_MAGIC = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
LOCAL_HEADER = struct.Struct("<4s5H3I2H")
SAFETENSORS_MAX_HEADER = 100_000_000  # the safetensors library's own limit
UNIT_BYTES = 16 * MiB  # work handed to one thread at a time
SLICE_BYTES = 1 * MiB  # CRC'd and summed back to back, while it sits in L2
REASON_MAX_CHARS = 300
FORMAT_ZIP = "torch-zip"
FORMAT_LEGACY = "torch-legacy"
FORMAT_SAFETENSORS = "safetensors"
# Test hook, never set in production: a request for exactly this path stalls forever,
# so tests can exercise the job timeout and a worker killed in the middle of a job.
TEST_STALL_ENV = "TRAIN_SUPERVISOR_TEST_VALIDATOR_STALL"
_TEST_STALL_PATH = os.environ.get(TEST_STALL_ENV)

SAFETENSORS_DTYPES: dict[str, tuple[str, int]] = {
    "BOOL": ("bool", 1),
    "U8": ("uint8", 1),
    "I8": ("int8", 1),
    "U16": ("uint16", 2),
    "I16": ("int16", 2),
    "F16": ("float16", 2),
    "BF16": ("bfloat16", 2),
    "U32": ("uint32", 4),
    "I32": ("int32", 4),
    "F32": ("float32", 4),
    "C64": ("complex64", 8),
    "U64": ("uint64", 8),
    "I64": ("int64", 8),
    "F64": ("float64", 8),
    "F8_E4M3": ("float8_e4m3fn", 1),
    "F8_E4M3FNUZ": ("float8_e4m3fnuz", 1),
    "F8_E5M2": ("float8_e5m2", 1),
    "F8_E5M2FNUZ": ("float8_e5m2fnuz", 1),
    "F8_E8M0": ("float8_e8m0fnu", 1),
}


# --- CRC-32 -------------------------------------------------------------------------


def _fast_crc32() -> Callable[[Any, int], int]:
    """ISA-L's CRC-32 (about 7x zlib's here), then zlib-ng's, then zlib's."""
    for name in ("isal.isal_zlib", "zlib_ng.zlib_ng"):
        with contextlib.suppress(ImportError):
            crc: Callable[[Any, int], int] = importlib.import_module(name).crc32
            return crc
    return zlib.crc32


crc32 = _fast_crc32()
_CRC_POLY = 0xEDB88320  # reflected CRC-32 polynomial (zip, zlib)


def _multmodp(a: int, b: int) -> int:
    """a * b modulo the CRC polynomial (reflected bit order), as in zlib."""
    m, p = 1 << 31, 0
    while True:
        if a & m:
            p ^= b
            if a & (m - 1) == 0:
                return p
        m >>= 1
        b = (b >> 1) ^ _CRC_POLY if b & 1 else b >> 1


def _x2n_table() -> list[int]:
    table, p = [], 1 << 30  # x^1
    for _ in range(32):
        table.append(p)
        p = _multmodp(p, p)
    return table


_X2N = _x2n_table()


@lru_cache(maxsize=64)
def _x8nmodp(length: int) -> int:
    """x^(8 * length) modulo the CRC polynomial."""
    p, k = 1 << 31, 3
    while length:
        if length & 1:
            p = _multmodp(_X2N[k & 31], p)
        length >>= 1
        k += 1
    return p


def crc32_combine(crc1: int, crc2: int, length2: int) -> int:
    """CRC-32 of A + B from crc(A), crc(B) and len(B) (zlib's crc32_combine)."""
    return _multmodp(_x8nmodp(length2), crc1) ^ crc2


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


def validate(request: ValidationRequest, memory: MemoryLimit | None = None) -> Verdict:
    """Judge one file. Never raises: every failure is a verdict."""
    started = time.monotonic()
    job = Job(request)
    validator_error = changed = False
    try:
        if _TEST_STALL_PATH is not None and request.path == _TEST_STALL_PATH:
            print(f"test hook: stalling on {request.path}", file=sys.stderr, flush=True)
            time.sleep(1e6)
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
        size=st.st_size if st else 0,
        mtime_ns=st.st_mtime_ns if st else 0,
        inode=st.st_ino if st else 0,
        ctime_ns=st.st_ctime_ns if st else 0,
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
    before = (job.stat.st_ino, job.stat.st_size, job.stat.st_mtime_ns, job.stat.st_ctime_ns)
    try:
        now = os.lstat(job.request.path)
        after_fd = os.fstat(job.fd)
    except OSError:
        raise Changed("file changed while it was read (removed)") from None
    if (now.st_ino, now.st_size, now.st_mtime_ns, now.st_ctime_ns) != before or (
        after_fd.st_size,
        after_fd.st_mtime_ns,
        after_fd.st_ctime_ns,
    ) != before[1:]:
        raise Changed("file changed while it was read")


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= REASON_MAX_CHARS else text[: REASON_MAX_CHARS - 3] + "..."


# --- the data pass ------------------------------------------------------------------


@dataclass
class Owner:
    """A storage of floating-point values and the tensors (by name) that view them."""

    dtype: torch.dtype
    values: torch.Tensor  # the whole storage, 1-d, as `dtype` (as bytes if misaligned)
    tensors: list[tuple[str, torch.Tensor]]


@dataclass
class Region:
    """A byte range of the file: its CRC-32 is computed and, with an owner, its bytes
    are checked as the owner's values. With read=False nothing is read from the file:
    only the owner's values, already in memory, are checked."""

    file_offset: int
    length: int
    owner: Owner | None = None
    read: bool = True


@dataclass(frozen=True)
class Unit:
    region: int
    start: int  # within the region
    length: int


@dataclass
class PassResult:
    crcs: list[int]  # per region
    flagged: list[Owner]  # owners whose fast sum was not finite


_pool: ThreadPoolExecutor | None = None
_local = threading.local()


def _threads() -> int:
    return max(1, min(4, len(os.sched_getaffinity(0))))


def _scan_pool() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=_threads(), thread_name_prefix="scan")
    return _pool


def data_pass(fd: int, regions: list[Region]) -> PassResult:
    """CRC-32 of every region and the fast finiteness sum of every owner, in units
    spread over the pool, with unit CRCs combined in order."""
    units = [
        Unit(index, start, min(UNIT_BYTES, region.length - start))
        for index, region in enumerate(regions)
        for start in range(0, region.length, UNIT_BYTES)
    ]
    results = list(_scan_pool().map(lambda unit: _scan(fd, regions[unit.region], unit), units))
    crcs = [0] * len(regions)
    sums = [0.0] * len(regions)
    for unit, (crc, total) in zip(units, results, strict=True):
        crcs[unit.region] = crc32_combine(crcs[unit.region], crc, unit.length)
        sums[unit.region] += total
    flagged = [r.owner for r, s in zip(regions, sums, strict=True) if r.owner and not math.isfinite(s)]
    return PassResult(crcs, flagged)


def _scan(fd: int, region: Region, unit: Unit) -> tuple[int, float]:
    """Read the unit slice by slice into this thread's buffer and CRC and sum each slice
    while it is in L2. Reading copies out of the page cache like cat does; faulting in a
    mapping of the file instead costs several times more whenever the page cache holds
    the file in small folios (measured: 12 ms or 94 ms for the same 1.3 GB)."""
    crc, total = 0, 0.0
    owner = region.owner
    for start in range(unit.start, unit.start + unit.length, SLICE_BYTES):
        end = min(start + SLICE_BYTES, unit.start + unit.length)
        if region.read:
            data, raw = _read(fd, region.file_offset + start, end - start)
            crc = crc32(data, crc)
            if owner is not None:
                total += fast_sum(raw.view(owner.dtype))
        elif owner is not None:
            size = owner.values.element_size()
            total += fast_sum(owner.values[start // size : end // size])
    return crc, total


def _read(fd: int, offset: int, length: int) -> tuple[memoryview, torch.Tensor]:
    """`length` bytes at `offset` in this thread's buffer, as bytes and as a uint8 tensor."""
    buffer: bytearray | None = getattr(_local, "buffer", None)
    if buffer is None:
        buffer = _local.buffer = bytearray(SLICE_BYTES)
        _local.tensor = torch.frombuffer(buffer, dtype=torch.uint8)
    view = memoryview(buffer)[:length]
    if os.preadv(fd, [view], offset) != length:
        raise Changed("file changed while it was read (shorter)")
    tensor: torch.Tensor = _local.tensor
    return view, tensor[:length]


# The 8-bit floats have no sum kernel of their own; they are summed into fp32.
_FLOAT8 = {
    getattr(torch, name)
    for name in ("float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "float8_e8m0fnu")
    if hasattr(torch, name)
}


def fast_sum(values: torch.Tensor) -> float:
    """A number that is finite if every element of `values` is (see the module doc)."""
    if values.dtype.is_complex:
        values = torch.view_as_real(values)
    try:
        if values.dtype in _FLOAT8:
            return float(values.sum(dtype=torch.float32))
        # fp16 and bf16 sums accumulate in fp32 inside the kernel: 2.5x faster than
        # sum(dtype=float32), whose conversion pass is separate.
        total = float(values.sum())
        if values.dtype == torch.float16 and not math.isfinite(total):
            total = float(values.sum(dtype=torch.float32))  # fp16 ends at 65504: a finite sum may not fit
        return total
    except RuntimeError:  # a dtype without a sum kernel: no shortcut
        return 0.0 if bool(torch.isfinite(values.float()).all()) else math.inf


def nonfinite_kind(values: torch.Tensor) -> str | None:
    """One of "NaN", "Inf", "NaN, Inf", or None if every element is finite."""
    if math.isfinite(fast_sum(values)):
        return None
    if values.dtype.is_complex:
        values = torch.view_as_real(values)
    if values.element_size() == 1 or values.dtype == torch.complex32:
        values = values.float()  # isinf has no kernel for the 8-bit floats
    kinds = [kind for kind, test in (("NaN", torch.isnan), ("Inf", torch.isinf)) if bool(test(values).any())]
    return ", ".join(kinds) or None


def nonfinite_reason(flagged: list[Owner]) -> str | None:
    bad = [
        (name, kind) for owner in flagged for name, t in owner.tensors if (kind := _seen_through(owner, t))
    ]
    if not bad:  # the sum overflowed, or the values lie outside every tensor
        return None
    name, kind = bad[0]
    more = len(bad) - 1
    tail = f" and {more} more tensor{'s' if more > 1 else ''}" if more else ""
    return f"non-finite values in {name} ({kind}){tail}"


def _seen_through(owner: Owner, tensor: torch.Tensor) -> str | None:
    """The kinds of non-finite value `tensor` shows of its storage. Checked on the
    storage, never by materialising the view: `torch.tensor([nan]).expand(2**33)` is
    one float in the file. A dimension of stride 0 repeats the same values (size 1
    tells the same); a view that still reaches more elements than its storage has
    (overlapping strides) is judged by the storage range it spans."""
    values = owner.values
    if tensor.dtype != owner.dtype or values.dtype != owner.dtype:
        return nonfinite_kind(_typed(tensor, owner.dtype)) if tensor.numel() <= values.numel() else None
    sizes = [1 if stride == 0 else size for size, stride in zip(tensor.shape, tensor.stride(), strict=True)]
    if 0 in sizes:
        return None
    offset = tensor.storage_offset()
    reach = math.prod(sizes)
    if reach <= 4 * values.numel():
        seen = torch.as_strided(values, sizes, tensor.stride(), offset)
    else:
        extent = sum((size - 1) * abs(stride) for size, stride in zip(sizes, tensor.stride(), strict=True))
        seen = values[offset : offset + extent + 1]
    return nonfinite_kind(seen)


# --- walking the loaded object ------------------------------------------------------


_LEAVES = (int, float, complex, str, bytes, type(None), torch.dtype, torch.device)


def _children(name: str, obj: object) -> list[tuple[str, object]]:
    """What may hold tensors inside `obj` (a loss history of a million floats does not)."""
    if isinstance(obj, Mapping):
        items = list(obj.items())
    elif isinstance(obj, list | tuple | set | frozenset):
        items = list(enumerate(obj))
    elif isinstance(getattr(obj, "__dict__", None), dict):  # an allowed global's instance
        items = list(vars(obj).items())
    else:
        return []
    return [(f"{name}.{key}" if name else str(key), v) for key, v in items if not isinstance(v, _LEAVES)]


def named_values(root: object) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor (and storage, as a uint8/typed 1-d tensor) in `root`, depth first in
    dict order, named by its key path ("model.enc.weight")."""
    stack: list[tuple[str, object]] = [("", root)]
    seen: set[int] = set()
    while stack:
        name, obj = stack.pop()
        if isinstance(obj, torch.Tensor):
            if obj.layout != torch.strided:  # sparse: only the values can be non-finite
                try:
                    obj = obj._values() if obj.layout == torch.sparse_coo else obj.values()
                except RuntimeError:
                    continue
            yield name or "<root>", obj
        elif isinstance(obj, torch.storage.TypedStorage):
            yield name or "<root>", _storage_values(obj._untyped_storage, obj.dtype)
        elif isinstance(obj, torch.UntypedStorage):
            yield name or "<root>", _storage_values(obj, torch.uint8)
        elif id(obj) not in seen:
            seen.add(id(obj))
            stack.extend(reversed(_children(name, obj)))


def _storage_values(storage: torch.UntypedStorage, dtype: torch.dtype) -> torch.Tensor:
    """A storage's whole content as a 1-d tensor of `dtype` (no copy)."""
    raw = torch.empty(0, dtype=torch.uint8).set_(storage)
    return raw if dtype == torch.uint8 else raw.view(dtype)


def _is_floating(dtype: torch.dtype) -> bool:
    return dtype.is_floating_point or dtype.is_complex


def collect_owners(root: object, skip: tuple[str, ...] = ()) -> list[Owner]:
    """The distinct storages behind floating-point tensors, in first-seen order, but for
    those under the top-level keys in `skip` (bookkeeping whose values may be inf)."""
    owners: dict[int, Owner] = {}
    for name, t in named_values(root):
        if name.split(".", 1)[0] in skip:
            continue
        if t.device.type != "cpu":  # loaded to the CPU: only the meta device stays
            raise Rejected(f"tensor {name} is on the {t.device.type} device: it holds no data to resume from")
        if not _is_floating(t.dtype):
            continue
        storage = t.untyped_storage()
        if storage.nbytes() == 0:
            continue
        owner = owners.get(storage.data_ptr())
        if owner is None:
            owner = owners[storage.data_ptr()] = Owner(t.dtype, _storage_values(storage, t.dtype), [])
        owner.tensors.append((name, t))
    return list(owners.values())


# --- torch.load ---------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# "Unsupported global: GLOBAL x.y was not an allowed global by default ...",
# "Trying to load unsupported GLOBAL posix.system whose module posix is blocked."
_UNSAFE_GLOBAL = re.compile(r"\bGLOBAL ([\w.]+)")
# torch's advice around the actual cause of a weights-only failure.
_BOILERPLATE = (
    "Weights only load failed",
    "In PyTorch 2.6",
    "Please file an issue",
    "(1)",
    "(2)",
    "Check the documentation",
)
_UNPICKLER = "WeightsUnpickler error:"


def resolve_globals(names: tuple[str, ...]) -> list[Any]:
    """Import exactly the globals the request allows ("pathlib.PosixPath"), nothing else."""
    resolved = []
    for dotted in names:
        module, _, attribute = dotted.rpartition(".")
        while module:
            try:
                obj: Any = importlib.import_module(module)
                for part in attribute.split("."):
                    obj = getattr(obj, part)
                resolved.append(obj)
                break
            except (ImportError, AttributeError):
                module, _, head = module.rpartition(".")
                attribute = f"{head}.{attribute}"
        else:
            raise Rejected(f"allowed global cannot be imported: {dotted}")
    return resolved


# Python 3.13 moved the path classes to pathlib._local and pickles them under that
# name; a checkpoint may come from either side of that change.
PATHLIB_MODULES = ("pathlib", "pathlib._local")


def with_spellings(allowed: list[Any]) -> list[Any]:
    """Each allowed path class under both of its module names (torch's (obj, name) form)."""
    spelled: list[Any] = []
    for obj in allowed:
        if getattr(obj, "__module__", None) in PATHLIB_MODULES:
            spelled += [(obj, f"{module}.{obj.__qualname__}") for module in PATHLIB_MODULES]
        else:
            spelled.append(obj)
    return spelled


def torch_load(job: Job, *, mmap: bool) -> object:
    allowed = with_spellings(resolve_globals(job.request.allowed_globals))
    try:
        with torch.serialization.safe_globals(allowed):
            try:
                root = torch.load(job.opened, map_location="cpu", weights_only=True, mmap=mmap)
            except pickle.UnpicklingError as exc:
                raise Rejected(_unpickling_reason(job, str(exc))) from None
    except Rejected:
        raise
    except EOFError:
        raise Rejected("truncated: unexpected end of file") from None
    except Exception as exc:
        if _is_out_of_memory(exc):
            raise
        message = torch_cause(str(exc)) or type(exc).__name__
        # Legacy files: "unexpected EOF, expected 77 more bytes. The file might be corrupted."
        if message.startswith("unexpected EOF"):
            raise Rejected(f"truncated: {message.partition('. ')[0]}") from None
        raise Rejected(f"torch.load failed: {message}") from None
    if job.request.allowed_globals and job.format == FORMAT_ZIP:
        # What beyond torch's own safe globals it needed: what the trainer must allow.
        # The file loaded, so a scan that fails is the validator's failure (unknown),
        # never the file's.
        job.needs_globals = tuple(sorted(torch.serialization.get_unsafe_globals_in_checkpoint(job.opened)))
    return root


def _unpickling_reason(job: Job, message: str) -> str:
    message = _ANSI.sub("", message)
    unsafe = _UNSAFE_GLOBAL.findall(message)
    if job.format == FORMAT_ZIP:  # a static scan (no unpickling) names them all
        with contextlib.suppress(Exception):
            unsafe = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(job.opened)) or unsafe
    if unsafe:
        return f"unsafe global{'s' if len(unsafe) > 1 else ''} not allowed: {', '.join(unsafe)}"
    return f"unpickling failed: {torch_cause(message) or 'no reason given'}"


def torch_cause(message: str) -> str | None:
    """The cause in one of torch's messages, without its advice around it: what follows
    "WeightsUnpickler error:", else the first line that is not boilerplate."""
    message = _ANSI.sub("", message)
    if _UNPICKLER in message:
        message = message.split(_UNPICKLER, 1)[1]
    lines = [line.strip() for line in message.splitlines()]
    detail = [line for line in lines if line and not line.startswith(_BOILERPLATE)]
    return " ".join(detail[0].split()) if detail else None


# --- torch zip ----------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    name: str
    offset: int  # of the data
    size: int
    crc: int


def zip_records(job: Job) -> list[Record]:
    """The archive's records from its central directory, each local header checked."""
    try:
        with os.fdopen(os.dup(job.fd), "rb") as handle, zipfile.ZipFile(handle) as archive:
            infos = archive.infolist()
            directory_at = int(getattr(archive, "start_dir", job.size))
    except zipfile.BadZipFile as exc:
        if str(exc) == "File is not a zip file":  # no end-of-central-directory record
            raise Rejected("truncated: no zip central directory") from None
        raise Rejected(f"corrupt zip: {exc}") from None
    return [_local_record(job.fd, info, directory_at) for info in infos]


def _local_record(fd: int, info: zipfile.ZipInfo, directory_at: int) -> Record:
    header = os.pread(fd, LOCAL_HEADER.size, info.header_offset)
    if len(header) != LOCAL_HEADER.size or LOCAL_HEADER.unpack(header)[0] != ZIP_MAGIC:
        raise Rejected(f"corrupt zip: bad local header of record {info.filename}")
    *_, name_length, extra_length = LOCAL_HEADER.unpack(header)
    name_at = info.header_offset + LOCAL_HEADER.size
    encoding = "utf-8" if info.flag_bits & 0x800 else "cp437"  # as zipfile decoded it
    if os.pread(fd, name_length, name_at) != info.orig_filename.encode(encoding, "surrogateescape"):
        raise Rejected(f"corrupt zip: local header of record {info.filename} names another file")
    if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
        raise Rejected(f"record {info.filename} is compressed: not written by torch.save")
    offset = name_at + name_length + extra_length
    if offset + info.file_size > directory_at:
        raise Rejected(f"corrupt zip: record {info.filename} runs past its end")
    return Record(info.filename, offset, info.file_size, info.CRC)


def _check_torch_zip(job: Job) -> None:
    records = zip_records(job)
    names = {r.name for r in records}
    prefixes = {n.partition("/")[0] for n in names if n.count("/") == 1 and n.endswith("/data.pkl")}
    if len(prefixes) != 1:
        raise Rejected("not a torch checkpoint: zip without one <archive>/data.pkl")
    prefix = prefixes.pop()
    if f"{prefix}/constants.pkl" in names:
        raise Rejected("TorchScript archive, not a checkpoint")
    crc_enabled = any(r.crc for r in records if r.size)
    if not crc_enabled:
        job.notes.append("CRC-32 disabled by the writer: record data not verified")
    is_data = re.compile(re.escape(prefix) + r"/data/\d+").fullmatch
    data = [r for r in records if is_data(r.name)]
    small = [r for r in records if not is_data(r.name)]
    # The small records first: damage to data.pkl is reported as damage, not as a pickle error.
    small_crcs = data_pass(job.fd, [Region(r.offset, r.size) for r in small]).crcs
    if crc_enabled:
        _compare_crcs(small, small_crcs)
    root = torch_load(job, mmap=True)
    job.take(check_content(job.request, root))
    owners = collect_owners(root, job.request.finite_except) if job.request.check_finite else []
    result = data_pass(job.fd, _regions_for_records(job, data, owners))
    data_crcs = result.crcs[: len(data)]  # the regions of the records come first
    if crc_enabled:
        _compare_crcs(data, data_crcs)
    computed = dict(zip([r.name for r in small + data], small_crcs + data_crcs, strict=True))
    job.checksum = f"{crc32(b''.join(struct.pack('<I', computed[r.name]) for r in records), 0):08x}"
    reason = nonfinite_reason(result.flagged)
    if reason is not None:
        raise Rejected(reason)


def _compare_crcs(records: list[Record], crcs: list[int]) -> None:
    for record, crc in zip(records, crcs, strict=True):
        if crc != record.crc:
            raise Rejected(f"CRC mismatch in record {record.name}")


def _regions_for_records(job: Job, records: list[Record], owners: list[Owner]) -> list[Region]:
    """One region per data record, in order. Where torch's mapping of the file holds a
    storage at the record's data offset, the region's bytes are also checked as that
    storage's values (they are the same bytes: read once). Owners found nowhere (torch
    did not map the file after all?) get a values-only region each, after the records."""
    assert job.stat is not None
    mappings = _file_mappings(job.stat)
    by_offset = {r.offset: r for r in records}
    owner_at: dict[str, Owner] = {}
    loose: list[Owner] = []
    for owner in owners:
        offset = _file_offset(mappings, owner.values)
        record = by_offset.get(offset) if offset is not None else None
        if record is None:
            loose.append(owner)
            continue
        nbytes = owner.values.untyped_storage().nbytes()
        if nbytes != record.size:
            raise Rejected(
                f"corrupt: record {record.name} holds {record.size} bytes, its tensor needs {nbytes}"
            )
        owner_at[record.name] = owner
    regions = [Region(r.offset, r.size, owner_at.get(r.name)) for r in records]
    return regions + [_in_memory(owner) for owner in loose]


def _in_memory(owner: Owner) -> Region:
    return Region(0, owner.values.untyped_storage().nbytes(), owner=owner, read=False)


def _file_mappings(st: os.stat_result) -> list[tuple[int, int, int]]:
    """(start, end, file offset) of every mapping of this file in our address space."""
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}"
    found = []
    with open("/proc/self/maps", errors="surrogateescape") as maps:  # (file names need not be UTF-8)
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) >= 5 and fields[4] == str(st.st_ino) and fields[3] == device:
                start, end = (int(x, 16) for x in fields[0].split("-"))
                found.append((start, end, int(fields[2], 16)))
    return found


def _file_offset(mappings: list[tuple[int, int, int]], values: torch.Tensor) -> int | None:
    address, nbytes = values.data_ptr(), values.untyped_storage().nbytes()
    for start, end, offset in mappings:
        if start <= address and address + nbytes <= end:
            return address - start + offset
    return None


# --- legacy torch.save --------------------------------------------------------------


def _check_torch_legacy(job: Job) -> None:
    root = torch_load(job, mmap=False)
    job.take(check_content(job.request, root))
    owners = collect_owners(root, job.request.finite_except) if job.request.check_finite else []
    # The storages are in memory (never mmap: torch cannot), the whole file's CRC is the
    # checksum: one pass for both, the file's pages still in the page cache.
    regions = [Region(0, job.size)]
    regions += [_in_memory(owner) for owner in owners]
    result = data_pass(job.fd, regions)
    job.checksum = f"{result.crcs[0]:08x}"
    reason = nonfinite_reason(result.flagged)
    if reason is not None:
        raise Rejected(reason)


# --- safetensors --------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    name: str
    dtype: torch.dtype
    begin: int  # within the data area
    end: int


def safetensors_header(job: Job) -> tuple[int, dict[str, Any]]:
    """(header length, parsed header), every entry checked against the file's size."""
    (length,) = struct.unpack("<Q", os.pread(job.fd, 8, 0))
    if length > SAFETENSORS_MAX_HEADER:
        raise Rejected(f"corrupt safetensors header: length {length} too large")
    if 8 + length > job.size:
        raise Rejected(f"truncated: safetensors header of {length} bytes, file has {job.size - 8} after it")
    try:
        header = json.loads(os.pread(job.fd, length, 8))
    except (UnicodeDecodeError, ValueError):
        raise Rejected("corrupt safetensors header: not valid JSON") from None
    except RecursionError:
        raise Rejected("corrupt safetensors header: JSON nested too deeply") from None
    if not isinstance(header, dict):
        raise Rejected("corrupt safetensors header: not a JSON object")
    metadata = header.get("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise Rejected("corrupt safetensors header: __metadata__ must map strings to strings")
    return length, header


def safetensors_entries(header: dict[str, Any], data_size: int) -> list[Entry]:
    entries = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        entries.append(_entry(name, info, data_size))
    entries.sort(key=lambda e: (e.begin, e.end))
    cursor = 0
    for entry in entries:
        if entry.begin != cursor:
            raise Rejected(
                f"corrupt safetensors header: {entry.name} starts at {entry.begin}, expected {cursor}"
            )
        cursor = entry.end
    if cursor != data_size:
        raise Rejected(f"corrupt safetensors: {data_size - cursor} trailing bytes not covered by any tensor")
    return entries


def _entry(name: str, info: object, data_size: int) -> Entry:
    def bad(why: str) -> Rejected:
        return Rejected(f"corrupt safetensors header: {name}: {why}")

    if not isinstance(info, dict):
        raise bad("not an object")
    dtype_name, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    known = SAFETENSORS_DTYPES.get(dtype_name) if isinstance(dtype_name, str) else None
    dtype = getattr(torch, known[0], None) if known else None
    if known is None or dtype is None:
        raise bad(f"unsupported dtype {dtype_name!r}")
    if not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise bad("bad shape")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(n, int) and n >= 0 for n in offsets)
        or offsets[0] > offsets[1]
    ):
        raise bad("bad data_offsets")
    if offsets[1] > data_size:
        raise Rejected(f"truncated: tensor {name} ends at byte {offsets[1]}, data area has {data_size}")
    needed = math.prod(shape) * known[1]
    if offsets[1] - offsets[0] != needed:
        raise bad(f"{offsets[1] - offsets[0]} bytes for {dtype_name}{shape}, which needs {needed}")
    return Entry(name, dtype, offsets[0], offsets[1])


def _check_safetensors(job: Job) -> None:
    length, header = safetensors_header(job)
    entries = safetensors_entries(header, job.size - 8 - length)
    _library_agrees(job)
    metadata: dict[str, str] = header.get("__metadata__", {})
    job.take(check_content(job.request, {**{e.name: None for e in entries}, **metadata}))
    storage = torch.UntypedStorage.from_file(job.opened, False, job.size)
    assert isinstance(storage, torch.UntypedStorage)
    raw = _storage_values(storage, torch.uint8)
    regions = [Region(0, 8 + length)]
    for entry in entries:
        begin, end = 8 + length + entry.begin, 8 + length + entry.end
        owner = None
        if job.request.check_finite and _is_floating(entry.dtype) and end > begin:
            # The pass reads the file; the mapping is only touched to name a bad tensor.
            values = raw[begin:end]
            with contextlib.suppress(RuntimeError):  # misaligned in the file: stays bytes
                values = values.view(entry.dtype)
            owner = Owner(entry.dtype, values, [(entry.name, values)])
        regions.append(Region(begin, end - begin, owner))
    result = data_pass(job.fd, regions)
    crc = 0
    for region, part in zip(regions, result.crcs, strict=True):
        crc = crc32_combine(crc, part, region.length)
    job.checksum = f"{crc:08x}"
    reason = nonfinite_reason(result.flagged)
    if reason is not None:
        raise Rejected(reason)


def _typed(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`values` as `dtype`: as they are, or bytes viewed as `dtype`, or copied if misaligned."""
    if values.dtype == dtype:
        return values
    try:
        return values.view(dtype)
    except RuntimeError:
        return values.clone().view(dtype)


def _library_agrees(job: Job) -> None:
    """The trainer will open the file with the safetensors library: it must accept it."""
    try:
        from safetensors import SafetensorError, safe_open
    except ImportError:
        job.notes.append("safetensors not installed: not cross-checked with the library")
        return
    try:
        with safe_open(job.opened, framework="numpy") as handle:
            handle.keys()
    except SafetensorError as exc:
        raise Rejected(f"safetensors rejects it: {exc}") from None


# --- process ------------------------------------------------------------------------


def _die_with_parent(parent_pid: int | None) -> None:
    """No orphans: the kernel kills us when the client goes, even by SIGKILL."""
    PR_SET_PDEATHSIG = 1
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if parent_pid is not None and os.getppid() != parent_pid:
        sys.exit(0)  # it went before we could ask


def serve(memory: MemoryLimit) -> int:
    """Answer JSON-line requests on stdin until EOF."""
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # whatever a library prints goes to stderr, never into the protocol
    for raw in sys.stdin.buffer:
        job_id: object = None
        try:
            message = json.loads(raw)
            job_id = message["id"]
            request = ValidationRequest.from_json(message["request"])
        except (ValueError, KeyError, TypeError) as exc:
            reply: dict[str, Any] = {"id": job_id, "error": f"bad request: {exc}"}
        else:
            reply = {"id": job_id, "verdict": validate(request, memory).to_json()}
        try:
            protocol.write(json.dumps(reply) + "\n")
            protocol.flush()
        except BrokenPipeError:
            return 0
    return 0


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m supervisor.validator.worker.serve", description=__doc__.split("\n")[0]
    )
    parser.add_argument("path", nargs="?", help="validate this one file and print its verdict as JSON")
    parser.add_argument("--serve", action="store_true", help="answer JSON-line requests on stdin")
    parser.add_argument("--parent-pid", type=int)
    parser.add_argument("--memory-limit-mb", type=int)
    parser.add_argument("--required-key", action="append", default=[])
    parser.add_argument("--step-key")
    parser.add_argument("--epoch-key")
    parser.add_argument("--expected-step", type=int)
    parser.add_argument("--expected-epoch", type=int)
    parser.add_argument("--allow-global", action="append", default=[])
    parser.add_argument("--no-finite", action="store_true", help="skip the finiteness check")
    args = parser.parse_args(argv)
    if args.serve == (args.path is not None):
        parser.error("give either --serve or one PATH")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    memory = MemoryLimit(args.memory_limit_mb)
    torch.set_num_threads(1)  # parallelism comes from our pool; more threads only contend
    gc.freeze()  # torch's many objects: each job's gc.collect() then costs ~0 instead of ~70 ms
    if args.serve:
        _die_with_parent(args.parent_pid)
        return serve(memory)
    request = ValidationRequest(
        path=args.path,
        required_keys=tuple(args.required_key),
        step_key=args.step_key,
        epoch_key=args.epoch_key,
        expected_step=args.expected_step,
        expected_epoch=args.expected_epoch,
        allowed_globals=tuple(args.allow_global),
        check_finite=not args.no_finite,
    )
    verdict = validate(request, memory)
    print(json.dumps(verdict.to_json()))
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main())
