"""Incremental reader of TensorBoard event files, standard library only.

Some trainers (Applio/RVC) write their losses nowhere but TensorBoard, so NaN detection
has to read `events.out.tfevents.*`. The daemon must not import torch, tensorboard or
protobuf, so the TFRecord framing, CRC32C and the few protobuf messages a scalar lives in
are decoded here by hand:

    record      uint64 length, uint32 masked CRC32C(length), data, uint32 masked CRC32C(data)
    Event       1: wall_time double, 2: step int64, 5: summary Summary
    Summary     1: repeated Value
    Value       1: tag string, 2: simple_value float, 8: tensor TensorProto
    TensorProto 1: dtype, 4: tensor_content, 5: float_val, 6: double_val

Unknown fields are skipped; a value is a scalar when it holds exactly one float or double.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import structlog

log = structlog.get_logger("supervisor.tfevents")

PATTERN = "events.out.tfevents.*"
CHUNK_BYTES = 4 * 1024 * 1024
# A scalar event is tens of bytes (a long tag: hundreds). Larger records (images, audio,
# histograms) are skipped unread: their length is known from the header alone.
MAX_RECORD_BYTES = 64 * 1024

_HEADER = struct.Struct("<QI")
_U32 = struct.Struct("<I")
_F32 = struct.Struct("<f")
_F64 = struct.Struct("<d")
_FOOTER = _U32.size
_MASK32 = 0xFFFFFFFF
_DT_FLOAT, _DT_DOUBLE = 1, 2
_FIXED_WIDTH = {1: 8, 5: 4}


@dataclass(frozen=True)
class Scalar:
    tag: str
    step: int
    value: float
    wall_time: float
    file: Path | None = None


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum TFRecord uses."""
    crc = _MASK32
    table = _CRC_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ _MASK32


def masked_crc32c(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & _MASK32


def _frame(data: bytes, offset: int) -> tuple[int | None, str | None]:
    """The data length of the record at `offset` (None while its header is incomplete), or an error."""
    if len(data) - offset < _HEADER.size:
        return None, None
    length, crc = _HEADER.unpack_from(data, offset)
    if masked_crc32c(data[offset : offset + 8]) != crc:
        return None, "length CRC mismatch"
    return int(length), None


def read_records(data: bytes, offset: int = 0) -> tuple[list[bytes], int, str | None]:
    """The complete records in `data` from `offset`: (records, offset after them, error).

    A record whose bytes are not all there yet ends the list without an error (its writer
    is mid-write; read again from the returned offset). A record failing its CRC ends it
    with an error, and the returned offset is that record's start. A record longer than
    MAX_RECORD_BYTES ends it too, with no error: the caller skips it unread.
    """
    records: list[bytes] = []
    while True:
        length, error = _frame(data, offset)
        if length is not None and length > MAX_RECORD_BYTES:
            return records, offset, None
        if length is None or offset + _HEADER.size + length + _FOOTER > len(data):
            return records, offset, error
        start = offset + _HEADER.size
        payload = data[start : start + length]
        if masked_crc32c(payload) != _U32.unpack_from(data, start + length)[0]:
            return records, offset, "data CRC mismatch"
        records.append(payload)
        offset = start + length + _FOOTER


class _Malformed(ValueError):
    pass


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while pos < len(data) and shift < 64:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
    raise _Malformed("truncated or overlong varint")


def _fields(data: bytes) -> Iterator[tuple[tuple[int, int], int | bytes]]:
    """((field number, wire type), value): an int for varints, the raw bytes otherwise."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        wire = key & 7
        if wire == 0:
            number, pos = _varint(data, pos)
            yield (key >> 3, wire), number
            continue
        if wire == 2:
            size, pos = _varint(data, pos)
        elif wire in _FIXED_WIDTH:
            size = _FIXED_WIDTH[wire]
        else:
            raise _Malformed(f"unsupported wire type {wire}")
        if pos + size > len(data):
            raise _Malformed("field runs past the end of its message")
        yield (key >> 3, wire), data[pos : pos + size]
        pos += size


def _unpack_all(fmt: struct.Struct, data: bytes) -> list[float]:
    if len(data) % fmt.size:
        raise _Malformed("packed values of the wrong length")
    return [value for (value,) in fmt.iter_unpack(data)]


def _content(dtype: int, content: bytes) -> list[float]:
    fmt = {_DT_FLOAT: _F32, _DT_DOUBLE: _F64}.get(dtype)
    return _unpack_all(fmt, content) if fmt is not None else []


def _tensor_scalar(data: bytes) -> float | None:
    dtype = 0
    content = b""
    values: list[float] = []
    for key, value in _fields(data):
        match key, value:
            case (1, 0), int():
                dtype = value
            case (4, 2), bytes():
                content = value
            case (5, 5) | (5, 2), bytes():
                values += _unpack_all(_F32, value)
            case (6, 1) | (6, 2), bytes():
                values += _unpack_all(_F64, value)
    values += _content(dtype, content)
    return values[0] if len(values) == 1 else None


def _value(data: bytes) -> tuple[str, float] | None:
    tag = ""
    number: float | None = None
    for key, value in _fields(data):
        match key, value:
            case (1, 2), bytes():
                tag = value.decode("utf-8", "replace")
            case (2, 5), bytes():
                number = _F32.unpack(value)[0]
            case (8, 2), bytes():
                number = _tensor_scalar(value)
    return None if number is None else (tag, number)


def _summary(data: bytes) -> list[tuple[str, float]]:
    found = (_value(value) for key, value in _fields(data) if key == (1, 2) and isinstance(value, bytes))
    return [item for item in found if item is not None]


def _int64(value: int) -> int:
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


def _event_scalars(data: bytes, file: Path | None) -> list[Scalar]:
    wall_time, step = 0.0, 0
    values: list[tuple[str, float]] = []
    for key, value in _fields(data):
        match key, value:
            case (1, 1), bytes():
                wall_time = _F64.unpack(value)[0]
            case (2, 0), int():
                step = _int64(value)
            case (5, 2), bytes():
                values += _summary(value)
    return [Scalar(tag, step, number, wall_time, file) for tag, number in values]


def parse_event(data: bytes, file: Path | None = None) -> list[Scalar]:
    """The scalars in one serialized Event: [] for other events and for bytes that do not decode."""
    try:
        return _event_scalars(data, file)
    except _Malformed:
        return []


def _read_chunk(fh: BinaryIO, offset: int) -> bytes:
    """Up to CHUNK_BYTES from `offset` (a record is at most MAX_RECORD_BYTES: it fits)."""
    fh.seek(offset)
    return fh.read(CHUNK_BYTES)


def _oversized(data: bytes) -> int | None:
    """The whole length of the record at the start of `data` when it is too large to
    read (header, data and footer), else None."""
    length, error = _frame(data, 0)
    if error is None and length is not None and length > MAX_RECORD_BYTES:
        return _HEADER.size + length + _FOOTER
    return None


@dataclass
class _FileState:
    offset: int = 0
    identity: tuple[int, int] | None = None
    size: int = 0
    broken: bool = False
    io_error: str | None = None


class EventDirReader:
    """New scalars from every event file in one directory, each file read on from where
    the previous poll stopped. Files may appear later; a file replaced or truncated is
    read again from its start. Bad data is logged, never raised."""

    def __init__(self, directory: Path, tags: Callable[[str], bool] | None = None) -> None:
        self.directory = directory
        self.tags = tags
        self._files: dict[Path, _FileState] = {}

    def poll(self) -> list[Scalar]:
        self._files = {path: self._files.get(path, _FileState()) for path in self._event_files()}
        return [scalar for path, state in self._files.items() for scalar in self._poll_file(path, state)]

    def _event_files(self) -> list[Path]:
        try:
            return sorted(path for path in self.directory.glob(PATTERN) if path.is_file())
        except OSError:
            return []

    def _poll_file(self, path: Path, state: _FileState) -> list[Scalar]:
        scalars: list[Scalar] = []
        try:
            with path.open("rb") as fh:
                self._follow(path, fh, state)
                while not state.broken and (records := self._next_records(path, fh, state)):
                    scalars += [s for record in records for s in parse_event(record, path) if self._wanted(s)]
            state.io_error = None
        except FileNotFoundError:
            pass
        except OSError as exc:
            self._report_io(path, state, exc)
        return scalars

    def _follow(self, path: Path, fh: BinaryIO, state: _FileState) -> None:
        stat = os.fstat(fh.fileno())
        identity = (stat.st_dev, stat.st_ino)
        if state.identity not in (None, identity) or stat.st_size < state.offset:
            log.info("event file replaced or truncated; reading it from the start", file=str(path))
            state.offset, state.broken = 0, False
        state.identity, state.size = identity, stat.st_size

    def _next_records(self, path: Path, fh: BinaryIO, state: _FileState) -> list[bytes]:
        while state.offset < state.size:  # records too large for a scalar: skipped unread
            fh.seek(state.offset)
            skip = _oversized(fh.read(_HEADER.size))
            if skip is None:
                break
            if state.offset + skip > state.size:
                return []  # still being written: skipped once it is whole
            state.offset += skip
        if state.offset >= state.size:
            return []
        records, used, error = read_records(_read_chunk(fh, state.offset))
        state.offset += used
        if error is not None:
            state.broken = True
            log.warning(
                "event file is corrupt; skipping the rest of it",
                file=str(path),
                offset=state.offset,
                error=error,
            )
        return records

    def _wanted(self, scalar: Scalar) -> bool:
        return self.tags is None or self.tags(scalar.tag)

    def _report_io(self, path: Path, state: _FileState, exc: OSError) -> None:
        if state.io_error != str(exc):
            state.io_error = str(exc)
            log.warning("cannot read event file", file=str(path), error=str(exc))
