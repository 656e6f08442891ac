"""Exponential backoff with jitter, as a pure function of the failure level and a draw.

Randomness is not read here: the caller passes `draw` in [0, 1). The core derives it
from a seed and the attempt number (`uniform`), so a replayed history gives the same
delays.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    initial_s: float
    max_s: float
    factor: float
    jitter: float  # 0..1: the delay may move up or down by this fraction

    def base_s(self, level: int) -> float:
        """The un-jittered delay after the `level`-th consecutive failure (level >= 1)."""
        if level < 1 or self.initial_s == 0:
            return 0.0
        try:
            grown = self.initial_s * self.factor ** (level - 1)
        except OverflowError:
            return self.max_s
        return min(self.max_s, grown)

    def delay_s(self, level: int, draw: float) -> float:
        """The jittered delay, always within [initial_s, max_s] (0 when initial_s is 0)."""
        base = self.base_s(level)
        if base == 0:
            return 0.0
        jittered = base * (1 + self.jitter * (2 * draw - 1))
        return min(self.max_s, max(self.initial_s, jittered))


def uniform(seed: int, n: int) -> float:
    """A reproducible draw in [0, 1) for the n-th decision of a run seeded with `seed`."""
    digest = hashlib.blake2b(f"{seed}:{n}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64
