"""The reread rules, replayed: a version the validator failed on, and versions caught mid-write."""

from __future__ import annotations

from supervisor.checkpoints.rereads import UNSETTLED_REREADS, UNSETTLED_WARN, VALIDATOR_RETRIES, Rereads
from supervisor.core.file_version import FileVersion

PATH = "/run/logs/G_latest.pth"


def version(n: int) -> tuple[str, FileVersion]:
    return (PATH, FileVersion(size=1000 + n, mtime_ns=n, inode=7, ctime_ns=n))


def test_a_failed_version_is_retried_by_rescans_a_bounded_number_of_times() -> None:
    rereads = Rereads()
    tries = [rereads.retry_failed(version(1)) for _ in range(VALIDATOR_RETRIES + 3)]
    assert tries.count(True) == VALIDATOR_RETRIES
    assert tries[VALIDATOR_RETRIES:] == [False] * 3  # then it waits for the next launch's plan
    assert rereads.retry_failed(version(2))  # a newer version has its own tries


def test_one_version_caught_mid_write_is_read_again_a_few_times_then_left_for_the_launch() -> None:
    rereads = Rereads()
    history = [rereads.caught_mid_write(version(1)) for _ in range(UNSETTLED_REREADS + 2)]
    assert [r.read_again for r in history] == [True] * UNSETTLED_REREADS + [False] * 2
    assert not any(r.warn for r in history)  # one version: no warning
    assert rereads.caught_mid_write(version(2)).read_again  # a newer version counts afresh


def test_versions_caught_mid_write_in_a_row_are_told_once() -> None:
    rereads = Rereads()
    told = [rereads.caught_mid_write(version(n)) for n in range(1, UNSETTLED_WARN + 3)]
    assert [r.warn for r in told].count(True) == 1
    (warning,) = [r for r in told if r.warn]
    assert warning.versions_in_a_row == UNSETTLED_WARN


def test_a_verdict_ends_the_run_of_unsettled_versions() -> None:
    rereads = Rereads()
    for n in range(1, UNSETTLED_WARN):
        rereads.caught_mid_write(version(n))
    rereads.judged(PATH)
    after = [rereads.caught_mid_write(version(n)) for n in range(10, 10 + UNSETTLED_WARN - 1)]
    assert not any(r.warn for r in after)  # counted from 1 again
