"""How often a checkpoint with no verdict is read again, and when that is worth a warning: pure bookkeeping.

Two cases, both about one version (`VersionKey`) of one path:
- the validator failed on it (a crash, a timeout): retried by the housekeeping rescans,
  `VALIDATOR_RETRIES` times (each launch's plan tries once more besides);
- it was caught mid-write (no verdict): read again after a quiet period, up to
  `UNSETTLED_REREADS` times; a path caught mid-write in `UNSETTLED_WARN` versions in a
  row, none verified, is told to the user (a writer faster than quiet_s).
The pipeline reports what happened; this decides. No I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from supervisor.core.file_version import VersionKey

VALIDATOR_RETRIES = 3
UNSETTLED_REREADS = 3
UNSETTLED_WARN = 5


@dataclass(frozen=True)
class Reread:
    """What to do about a version caught mid-write: read it again after the next quiet
    period, and warn (`versions_in_a_row`: how many versions of the path went unverified)."""

    read_again: bool
    warn: bool
    versions_in_a_row: int


@dataclass
class Rereads:
    _failed: dict[VersionKey, int] = field(default_factory=dict)  # rescan retries per version
    _unsettled: dict[str, tuple[VersionKey, int]] = field(default_factory=dict)  # rereads of the last version
    _in_a_row: dict[str, int] = field(default_factory=dict)  # versions of a path unverified since

    def retry_failed(self, key: VersionKey) -> bool:
        """A rescan finds this version still without a verdict from a failed validator:
        whether to try it again now (each try counts)."""
        tries = self._failed.get(key, 0)
        if tries >= VALIDATOR_RETRIES:
            return False
        self._failed[key] = tries + 1
        return True

    def caught_mid_write(self, key: VersionKey) -> Reread:
        path = key[0]
        last, tries = self._unsettled.get(path, (None, 0))
        new_version = last != key
        tries = 1 if new_version else tries + 1  # a newer version counts afresh
        self._unsettled[path] = (key, tries)
        in_a_row = self._in_a_row.get(path, 0) + new_version
        self._in_a_row[path] = in_a_row
        return Reread(
            read_again=tries <= UNSETTLED_REREADS,
            warn=new_version and in_a_row == UNSETTLED_WARN,
            versions_in_a_row=in_a_row,
        )

    def judged(self, path: str) -> None:
        """A version of `path` got a verdict (or a failed validator's error): the run of
        versions caught mid-write ends."""
        self._in_a_row.pop(path, None)
