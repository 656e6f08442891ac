"""The safetensors format: the header, the entries tiling the data area, and the library's own opinion."""

from __future__ import annotations

import contextlib
import json
import math
import os
import struct
from dataclasses import dataclass
from typing import Any

import torch

from supervisor.validator.worker.content import (
    Rejected,
    check_content,
)
from supervisor.validator.worker.crc import crc32_combine
from supervisor.validator.worker.data_pass import Owner, Region, data_pass, nonfinite_reason
from supervisor.validator.worker.job import Job
from supervisor.validator.worker.walk import _is_floating, _storage_values

SAFETENSORS_MAX_HEADER = 100_000_000  # the safetensors library's own limit

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
