"""CRC-32: the fastest implementation present, and combining the CRCs of adjacent pieces."""

from __future__ import annotations

import contextlib
import importlib
import zlib
from collections.abc import Callable
from functools import lru_cache
from typing import Any

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
