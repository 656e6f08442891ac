"""Housekeeping: chores on a real APScheduler scheduler in a real event loop, and the
disk-space watch that warns once per dip."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
import structlog.testing

from supervisor.daemon.housekeeping import (
    Chore,
    DaemonChores,
    DiskWatch,
    Every,
    Housekeeping,
    Space,
    folder_size,
    free_space,
)
from tests.support.load import scaled


def run_until(condition: asyncio.Event, chores: list[Chore], timeout_s: float = 20) -> None:
    async def main() -> None:
        housekeeping = Housekeeping(chores)
        housekeeping.start()
        try:
            await asyncio.wait_for(condition.wait(), scaled(timeout_s))
        finally:
            housekeeping.stop()
            housekeeping.stop()  # (twice is harmless)

    asyncio.run(main())


def test_chores_run_again_and_again_and_a_failing_one_does_not_stop_the_others() -> None:
    counts = {"steady": 0, "failing": 0}
    enough = asyncio.Event()

    async def steady() -> None:
        counts["steady"] += 1
        if counts["steady"] >= 3 and counts["failing"] >= 3:
            enough.set()

    async def failing() -> None:
        counts["failing"] += 1
        raise OSError("disk went away")

    run_until(enough, [Chore("steady", 0.02, steady), Chore("failing", 0.02, failing)])
    assert counts["failing"] >= 3, "a chore that failed runs again"


def test_a_slow_chore_never_runs_twice_at_once() -> None:
    running, most, runs = 0, 0, 0
    enough = asyncio.Event()

    async def slow() -> None:
        nonlocal running, most, runs
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.1)  # five of its periods
        running -= 1
        runs += 1
        if runs >= 3:
            enough.set()

    with structlog.testing.capture_logs() as said:
        run_until(enough, [Chore("slow", 0.02, slow)])
    assert most == 1
    skips = [x for x in said if x["event"].startswith("housekeeping chore still running")]
    assert [x["chore"] for x in skips] == ["slow"], "an overlap is said once, not at every tick"


def test_an_overlap_is_no_warning_from_the_scheduler(caplog: pytest.LogCaptureFixture) -> None:
    """A chore outlasting its interval (a loaded machine, a slow disk) is normal: APScheduler's
    'maximum number of running instances reached' warning at every tick must not reach the log."""
    runs = 0
    enough = asyncio.Event()

    async def slow() -> None:
        nonlocal runs
        await asyncio.sleep(0.1)
        runs += 1
        if runs >= 2:
            enough.set()

    with caplog.at_level(logging.INFO, logger="apscheduler"):
        run_until(enough, [Chore("slow", 0.02, slow)])
    assert [
        r for r in caplog.records if r.name.startswith("apscheduler") and r.levelno >= logging.WARNING
    ] == []
    assert any(r.name.startswith("apscheduler") for r in caplog.records), "the capture sees the scheduler"


def test_a_chore_under_way_at_the_stop_is_no_error(caplog: pytest.LogCaptureFixture) -> None:
    """The stop cancels a chore in flight (a disk check on a slow share, a status line on a
    loaded machine): that is the end of the run, not an "Error running job" with a traceback."""
    started = asyncio.Event()
    cancelled = []

    async def endless() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def main() -> None:
        housekeeping = Housekeeping([Chore("endless", 0.02, endless)])
        housekeeping.start()
        try:
            await asyncio.wait_for(started.wait(), scaled(20))
        finally:
            housekeeping.stop()
        for _ in range(10):
            await asyncio.sleep(0)  # the cancelled chore and its done-callback run

    with caplog.at_level(logging.DEBUG, logger="apscheduler"):
        asyncio.run(main())
    assert cancelled == [True], "the chore was in flight and the stop cancelled it"
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_no_chores_no_scheduler() -> None:
    housekeeping = Housekeeping([])
    housekeeping.start()  # outside a loop: nothing to schedule, nothing started
    housekeeping.stop()


def test_low_disk_space_is_said_once_per_dip_and_its_end_once() -> None:
    watch = DiskWatch(min_free_gb=5)
    data = Path("/data")
    low = [Space("checkpoint filesystem", data, 3.2)]
    said = watch.check(low, checkpoint_gb=1.5)
    assert said == [
        (
            "warning",
            "only 3.2 GB free on the checkpoint filesystem (/data): room for about 2 more checkpoints of 1.50 GB",
        )
    ]
    assert watch.check(low, checkpoint_gb=1.5) == [], "still low: not said again"
    assert watch.check([Space("checkpoint filesystem", data, 9.0)], None) == [
        ("info", "9.0 GB free again on the checkpoint filesystem (/data)")
    ]
    (again,) = watch.check([Space("checkpoint filesystem", data, 1.0)], None)
    assert again == ("warning", "only 1.0 GB free on the checkpoint filesystem (/data)")


def test_free_space_of_a_folder_not_made_yet_is_its_filesystems(tmp_path: Path) -> None:
    space = free_space("state filesystem", tmp_path / "not" / "yet")
    assert space is not None
    assert space.path == tmp_path / "not" / "yet"
    assert space.free_gb > 0


def test_folder_size_counts_files_below(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "one").write_bytes(b"x" * 10)
    (tmp_path / "a" / "b" / "two").write_bytes(b"x" * 5)
    assert folder_size(tmp_path) == (2, 15)
    assert folder_size(tmp_path / "missing") == (0, 0)


def daemon_chores(tmp_path: Path, reports: list[tuple[str, str, str]], **every: float) -> DaemonChores:
    (tmp_path / "ckpt").mkdir(exist_ok=True)
    return DaemonChores(
        every=Every(**{"rescan_s": 60, "retention_s": 3600, "disk_check_s": 300, "status_s": 600, **every}),
        checkpoint_dir=tmp_path / "ckpt",
        state_dir=tmp_path / "state",
        min_free_gb=10**9,  # more than any disk here: always low
        checkpoint_gb=lambda: 0.5,
        report=lambda *said: reports.append(said),
        status=lambda: {"phase": "running", "attempt": 3},
        rescan=None,
        retain=None,
    )


def test_the_daemons_disk_check_reports_one_filesystem_once(tmp_path: Path) -> None:
    reports: list[tuple[str, str, str]] = []
    chores = daemon_chores(tmp_path, reports)
    asyncio.run(chores.check_disk())
    asyncio.run(chores.check_disk())
    ((kind, level, message),) = reports  # checkpoints and state share a filesystem here
    assert (kind, level) == ("disk_space", "warning")
    assert message.startswith("only ")
    assert "on the checkpoint filesystem" in message
    assert message.endswith("more checkpoints of 0.50 GB")


def test_the_status_line_carries_the_runs_status_and_the_quarantine(tmp_path: Path) -> None:
    quarantine = tmp_path / "state" / "quarantine" / "20261121T000000Z"
    quarantine.mkdir(parents=True)
    (quarantine / "G_100.pth").write_bytes(b"x" * 2_000_000)
    chores = daemon_chores(tmp_path, [])
    with structlog.testing.capture_logs() as logs:
        asyncio.run(chores.status_line())
    (line,) = logs
    assert line["event"] == "status"
    assert (line["phase"], line["attempt"]) == ("running", 3)
    assert (line["quarantined_files"], line["quarantined_gb"]) == (1, 0.0)


def test_a_chore_set_to_zero_is_not_scheduled(tmp_path: Path) -> None:
    chores = daemon_chores(tmp_path, [], status_s=0)
    assert [c.name for c in chores.chores()] == ["disk_space"]
