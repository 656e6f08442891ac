"""CheckpointWatcher against real files, a real observer and a real event loop.

No timing assertions: each test waits for a condition with a generous deadline. Where a
test pits quiet_s against a writer's pauses, quiet_s is scaled with the machine's
slowdown (tests.support.load), so a starved writer cannot look finished.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingEmitter
from watchdog.utils import BaseThread

from supervisor.checkpoints.watch import FORCE_POLLING_ENV, CheckpointWatcher, Landed
from supervisor.checkpoints.watch_sources import INOTIFY_LOGGER
from tests.support.load import scaled

QUIET_S = 0.2
DEADLINE_S = 15.0
NO_POLL_S = 3600.0  # a polling observer that never polls: only scans can find files


class Recorder:
    def __init__(self) -> None:
        self.landed: list[Landed] = []
        self.at: list[float] = []

    def __call__(self, landed: Landed) -> None:
        self.landed.append(landed)
        self.at.append(time.monotonic())

    def count(self, path: Path) -> int:
        return sum(1 for landed in self.landed if landed.path == path)

    def sizes(self, path: Path) -> list[int]:
        return [landed.version.size for landed in self.landed if landed.path == path]


def run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), scaled(60)))


def watchdog_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if isinstance(t, BaseThread) and t.is_alive()]


async def until(predicate: Callable[[], object], what: str, timeout: float = DEADLINE_S) -> None:
    loop = asyncio.get_running_loop()
    limit = scaled(timeout)
    deadline = loop.time() + limit
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {limit:.0f}s waiting for {what}")
        await asyncio.sleep(0.02)


async def settle(watcher: CheckpointWatcher, rounds: int = 3) -> None:
    """Give a wrongly repeated report the chance to happen: several quiet periods, quiet after."""
    await asyncio.sleep(QUIET_S * rounds)
    assert await watcher.wait_quiet(scaled(DEADLINE_S))


@asynccontextmanager
async def watching(
    directories: list[Path], rec: Recorder, **options: Any
) -> AsyncIterator[CheckpointWatcher]:
    """A started watcher (quiet_s=QUIET_S unless given); on exit, stopped and no thread left."""
    watcher = CheckpointWatcher(directories, rec, **{"quiet_s": QUIET_S, **options})
    await watcher.start()
    try:
        yield watcher
    finally:
        await watcher.stop()
        assert watchdog_threads() == []


def write(path: Path, data: bytes = b"checkpoint") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def not_temp(path: Path) -> bool:
    return not path.name.endswith(".tmp")


@pytest.mark.slow
def test_slow_writer_is_reported_once_after_its_last_write(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt_100.pt"
    quiet_s = scaled(0.6)  # well above the pauses below, on a busy machine too

    async def body() -> None:
        rec = Recorder()
        async with watching([tmp_path], rec, quiet_s=quiet_s):
            for _ in range(6):  # each chunk: open, append, close (a close-after-write every time)
                with ckpt.open("ab") as f:
                    f.write(b"x" * 4096)
                await asyncio.sleep(0.05)
                assert rec.landed == []
            last_write = time.monotonic()
            await until(lambda: rec.landed, "the checkpoint to land")
            await asyncio.sleep(quiet_s * 3)
            assert rec.sizes(ckpt) == [6 * 4096]
            assert rec.at[0] > last_write

    run(body)


@pytest.mark.slow
def test_temp_file_renamed_into_place_is_reported_once_under_its_final_name(tmp_path: Path) -> None:
    async def body() -> None:
        rec = Recorder()
        async with watching([tmp_path], rec, accept=not_temp) as watcher:
            write(tmp_path / ".ckpt_200.pt.tmp", b"y" * 1000)
            os.replace(tmp_path / ".ckpt_200.pt.tmp", tmp_path / "ckpt_200.pt")
            await until(lambda: rec.landed, "the renamed checkpoint")
            await settle(watcher)
            assert [landed.path for landed in rec.landed] == [tmp_path / "ckpt_200.pt"]
            assert rec.landed[0].version.size == 1000

    run(body)


@pytest.mark.slow
def test_file_moved_in_from_outside_is_reported(tmp_path: Path) -> None:
    watched, outside = tmp_path / "watched", tmp_path / "outside"
    watched.mkdir()

    async def body() -> None:
        rec = Recorder()
        async with watching([watched], rec) as watcher:
            write(outside / "model.safetensors", b"z" * 321)
            os.replace(outside / "model.safetensors", watched / "model.safetensors")
            await until(lambda: rec.landed, "the moved-in file")
            await settle(watcher)
            assert rec.sizes(watched / "model.safetensors") == [321]
            assert len(rec.landed) == 1

    run(body)


@pytest.mark.slow
def test_burst_of_3000_files_all_reported_once_and_loop_stays_responsive(tmp_path: Path) -> None:
    count = 3000
    paths = [tmp_path / f"shard_{n:05d}.bin" for n in range(count)]

    async def body() -> None:
        loop = asyncio.get_running_loop()
        rec = Recorder()
        worst_gap = 0.0
        ticking = True

        async def tick() -> None:
            nonlocal worst_gap
            last = loop.time()
            while ticking:
                await asyncio.sleep(0.01)
                now = loop.time()
                worst_gap, last = max(worst_gap, now - last), now

        async with watching([tmp_path], rec) as watcher:
            ticker = asyncio.create_task(tick())
            await asyncio.to_thread(lambda: [p.write_bytes(p.name.encode()) for p in paths])
            await until(lambda: len(rec.landed) >= count, "all files to land", timeout=30)
            await settle(watcher)
            ticking = False
            await ticker
            counts = Counter(landed.path for landed in rec.landed)
            assert set(counts) == set(paths)
            assert max(counts.values()) == 1
            assert worst_gap < scaled(2.0), f"the loop stalled for {worst_gap:.2f}s"

    run(body)


@pytest.mark.slow
def test_rewrite_after_landing_is_reported_again(tmp_path: Path) -> None:
    ckpt = tmp_path / "latest.pt"

    async def body() -> None:
        rec = Recorder()
        async with watching([tmp_path], rec, accept=not_temp) as watcher:
            write(ckpt, b"a" * 10)
            await until(lambda: rec.count(ckpt) == 1, "the first version")
            write(ckpt, b"b" * 20)  # in place: same inode, new size and mtime
            await until(lambda: rec.count(ckpt) == 2, "the rewritten version")
            write(tmp_path / "latest.pt.tmp", b"c" * 20)  # same size, new inode
            os.replace(tmp_path / "latest.pt.tmp", ckpt)
            await until(lambda: rec.count(ckpt) == 3, "the replaced version")
            await settle(watcher)
            assert rec.sizes(ckpt) == [10, 20, 20]
            assert len({landed.version for landed in rec.landed}) == 3

    run(body)


@pytest.mark.parametrize("polling", [False, True], ids=["inotify", "polling"])
def test_a_same_size_rewrite_with_its_mtime_put_back_is_a_new_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, polling: bool
) -> None:
    """`cp -p` and `rsync -t` rewrite a file in place and set its mtime back: the size,
    mtime and inode are as before, only the ctime tells, and the watcher must see it.
    inotify reports the write; watchdog's polling observer compares sizes and mtimes
    only, so there the directory rescan (which compares whole versions) finds it."""
    options: dict[str, Any] = {"accept": not_temp}
    if polling:
        monkeypatch.setenv(FORCE_POLLING_ENV, "1")
        options["rescan_s"] = 0.5
    ckpt = tmp_path / "latest.pt"
    write(ckpt, b"a" * 64)
    first = os.lstat(ckpt)

    async def body() -> None:
        rec = Recorder()
        async with watching([tmp_path], rec, **options) as watcher:
            await until(lambda: rec.count(ckpt) == 1, "the first version")
            with ckpt.open("r+b") as f:  # in place: same inode, same size
                f.write(b"b" * 64)
            os.utime(ckpt, ns=(first.st_atime_ns, first.st_mtime_ns))
            again = os.lstat(ckpt)
            assert (again.st_size, again.st_mtime_ns, again.st_ino) == (
                first.st_size,
                first.st_mtime_ns,
                first.st_ino,
            )
            await until(lambda: rec.count(ckpt) == 2, "the rewritten version")
            await settle(watcher)
            assert rec.count(ckpt) == 2
            assert rec.landed[1].version.ctime_ns == again.st_ctime_ns != first.st_ctime_ns

    run(body)


@pytest.mark.slow
def test_file_deleted_while_pending_is_never_reported(tmp_path: Path) -> None:
    doomed, sentinel = tmp_path / "doomed.pt", tmp_path / "sentinel.pt"

    async def body() -> None:
        rec = Recorder()
        async with watching([tmp_path], rec, quiet_s=scaled(1.0)) as watcher:
            write(doomed)
            await until(lambda: doomed in watcher.pending(), "the file to be pending")
            doomed.unlink()
            write(sentinel)
            await until(lambda: rec.count(sentinel), "the sentinel written after the deletion")
            assert await watcher.wait_quiet(scaled(DEADLINE_S))
            assert rec.count(doomed) == 0
            assert watcher.pending() == set()

    run(body)


@pytest.mark.slow
def test_files_present_before_start_are_reported(tmp_path: Path) -> None:
    existing = [tmp_path / "ckpt_1.pt", tmp_path / "sub" / "ckpt_2.pt"]
    for path in existing:
        write(path)

    async def body() -> None:
        rec = Recorder()
        async with watching([tmp_path], rec) as watcher:
            assert watcher.pending() <= set(existing)
            await until(lambda: len(rec.landed) == 2, "the existing files")
            await settle(watcher)
            assert sorted(landed.path for landed in rec.landed) == sorted(existing)

    run(body)


@pytest.mark.slow
def test_directory_created_after_start_is_picked_up(tmp_path: Path) -> None:
    run_dir = tmp_path / "logs" / "run1"  # trainers create their log dir on first start

    async def body() -> None:
        rec = Recorder()
        # rescan_s is long: only the watch on the nearest existing parent can find it
        async with watching([run_dir], rec, rescan_s=600) as watcher:
            write(run_dir / "G_0.pth")
            await until(lambda: rec.count(run_dir / "G_0.pth"), "a file in the new directory")
            write(run_dir / "G_1000.pth")  # and the directory is watched from now on
            await until(lambda: rec.count(run_dir / "G_1000.pth"), "a later file there")
            await settle(watcher)
            assert len(rec.landed) == 2

    run(body)


def test_directory_deleted_and_recreated_is_watched_again(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()

    async def body() -> None:
        rec = Recorder()
        async with watching([run_dir], rec, rescan_s=600):
            shutil.rmtree(run_dir)
            await asyncio.sleep(QUIET_S)  # not required; makes the delete-then-recreate order likely
            write(run_dir / "ckpt.pt")
            await until(lambda: rec.count(run_dir / "ckpt.pt"), "a file in the recreated directory")

    run(body)


def test_missing_directory_whose_parent_is_deleted_and_recreated_is_picked_up(tmp_path: Path) -> None:
    parent = tmp_path / "logs"
    parent.mkdir()
    run_dir = parent / "run1"

    async def body() -> None:
        rec = Recorder()
        async with watching([run_dir], rec, rescan_s=600):
            shutil.rmtree(parent)
            await asyncio.sleep(QUIET_S)
            write(run_dir / "ckpt.pt")
            await until(lambda: rec.count(run_dir / "ckpt.pt"), "a file below the recreated parent")

    run(body)


@pytest.mark.slow
def test_file_in_nested_subdirectory_is_reported_and_accept_never_sees_directories(tmp_path: Path) -> None:
    seen: list[Path] = []

    def accept(path: Path) -> bool:
        seen.append(path)
        return True

    nested = tmp_path / "checkpoint-500" / "shards" / "model-00001.safetensors"

    async def body() -> None:
        rec = Recorder()
        async with watching([tmp_path], rec, accept=accept) as watcher:
            write(nested)
            await until(lambda: rec.count(nested), "the nested file")
            await settle(watcher)
            assert [landed.path for landed in rec.landed] == [nested]
            assert all(not path.is_dir() for path in seen)

    run(body)


@pytest.mark.slow
def test_symlinks_are_not_followed(tmp_path: Path) -> None:
    watched, outside = tmp_path / "watched", tmp_path / "outside"
    write(outside / "secret.pt")
    watched.mkdir()
    (watched / "link_dir").symlink_to(outside, target_is_directory=True)
    (watched / "link_file.pt").symlink_to(outside / "secret.pt")

    async def body() -> None:
        rec = Recorder()
        async with watching([watched], rec, rescan_s=0.2) as watcher:
            write(watched / "real.pt")
            await until(lambda: rec.count(watched / "real.pt"), "the real file")
            write(outside / "another.pt")
            await settle(watcher, rounds=5)  # a few rescans too
            assert [landed.path for landed in rec.landed] == [watched / "real.pt"]

    run(body)


@pytest.mark.slow
def test_rescan_finds_files_whose_events_were_lost(tmp_path: Path) -> None:
    async def body() -> None:
        rec = Recorder()
        async with watching(
            [tmp_path], rec, force_polling=True, poll_interval_s=NO_POLL_S, rescan_s=0.2
        ) as watcher:
            write(tmp_path / "sub" / "ckpt.pt")
            await until(lambda: rec.landed, "a rescan to find the file")
            await settle(watcher, rounds=5)  # several rescans: still reported once
            assert [landed.path for landed in rec.landed] == [tmp_path / "sub" / "ckpt.pt"]

    run(body)


@pytest.mark.slow
def test_without_events_a_growing_file_waits_until_its_size_is_stable(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt.pt"
    idle_quiet_s = 0.4
    quiet_s = scaled(idle_quiet_s)

    async def body() -> None:
        rec = Recorder()
        # Only scans see this file, so the stat comparison alone must hold the report back.
        async with watching(
            [tmp_path], rec, quiet_s=quiet_s, force_polling=True, poll_interval_s=NO_POLL_S, rescan_s=0.1
        ):
            with ckpt.open("wb") as f:
                for _ in range(round(3 * idle_quiet_s / 0.05)):
                    f.write(b"x" * 100)
                    f.flush()
                    await asyncio.sleep(0.05)
                    assert rec.landed == []
            await until(lambda: rec.landed, "the file once it stopped growing")
            assert rec.sizes(ckpt) == [ckpt.stat().st_size]

    run(body)


def test_inotify_overflow_triggers_a_rescan(tmp_path: Path) -> None:
    async def body() -> None:
        rec = Recorder()
        async with watching([tmp_path], rec, force_polling=True, poll_interval_s=NO_POLL_S, rescan_s=600):
            write(tmp_path / "ckpt.pt")  # nobody sees this until something rescans
            await asyncio.sleep(QUIET_S * 2)  # a while, for a negative: a polling bug would show
            assert rec.landed == []
            # What watchdog 7.1 logs when the kernel drops events (its only signal of it).
            logging.getLogger(INOTIFY_LOGGER).warning("Inotify queue overflowed; filesystem events were lost")
            await until(lambda: rec.landed, "the rescan after the overflow")

    run(body)


def test_a_dead_observer_is_replaced_and_files_are_still_reported(tmp_path: Path) -> None:
    async def body() -> None:
        rec = Recorder()
        async with watching([tmp_path], rec, rescan_s=0.2):
            dead = next(t for t in watchdog_threads() if isinstance(t, BaseObserver))
            dead.stop()
            await asyncio.to_thread(dead.join)
            await until(
                lambda: any(isinstance(t, BaseObserver) for t in watchdog_threads()), "a new observer"
            )
            write(tmp_path / "ckpt.pt")
            await until(lambda: rec.landed, "the file written after the observer died")

    run(body)


@pytest.mark.slow
def test_forget_makes_the_same_file_count_as_new(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt.pt"
    write(ckpt)

    async def body() -> None:
        rec = Recorder()
        # Only scans see files here, so nothing but forget() can make it be reported again.
        async with watching(
            [tmp_path], rec, force_polling=True, poll_interval_s=NO_POLL_S, rescan_s=0.2
        ) as watcher:
            await until(lambda: rec.count(ckpt) == 1, "the first report")
            await settle(watcher, rounds=3)
            assert rec.count(ckpt) == 1
            watcher.forget(ckpt)
            await until(lambda: rec.count(ckpt) == 2, "the report after forget()")
            assert rec.landed[0].version == rec.landed[1].version

    run(body)


@pytest.mark.slow
def test_quarantined_file_reappearing_under_its_name_is_reported(tmp_path: Path) -> None:
    watched, quarantine = tmp_path / "watched", tmp_path / "quarantine"
    quarantine.mkdir()
    ckpt = watched / "ckpt.pt"

    async def body() -> None:
        rec = Recorder()
        async with watching([watched], rec) as watcher:
            write(ckpt, b"bad")
            await until(lambda: rec.count(ckpt) == 1, "the first report")
            os.replace(ckpt, quarantine / "ckpt.pt")
            watcher.forget(ckpt)
            os.replace(quarantine / "ckpt.pt", ckpt)  # the very same file (and identity) is back
            await until(lambda: rec.count(ckpt) == 2, "the report of the file that came back")

    run(body)


def test_pending_and_wait_quiet_reflect_files_in_flight(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt.pt"

    async def body() -> None:
        rec = Recorder()
        async with watching([tmp_path], rec, quiet_s=scaled(0.5)) as watcher:
            assert watcher.pending() == set()
            assert await watcher.wait_quiet(1.0)
            with ckpt.open("wb") as f:
                for _ in range(10):
                    f.write(b"x" * 1024)
                    f.flush()
                    await asyncio.sleep(0.05)
                    if ckpt in watcher.pending():
                        break
                await until(lambda: ckpt in watcher.pending(), "the file to be pending")
                f.write(b"x")
                f.flush()
                # Still being written: it cannot become quiet within a moment.
                assert not await watcher.wait_quiet(0.05)
            assert await watcher.wait_quiet(scaled(DEADLINE_S))
            assert watcher.pending() == set()
            assert rec.count(ckpt) == 1

    run(body)


@pytest.mark.slow
def test_callback_errors_do_not_stop_the_watcher(tmp_path: Path) -> None:
    landed: list[Path] = []

    def on_landed(item: Landed) -> None:
        landed.append(item.path)
        raise RuntimeError("consumer bug")

    def accept(path: Path) -> bool:
        if path.name == "boom.pt":
            raise ValueError("filter bug")
        return True

    async def body() -> None:
        watcher = CheckpointWatcher([tmp_path], on_landed, accept=accept, quiet_s=QUIET_S)
        await watcher.start()
        try:
            write(tmp_path / "boom.pt")
            write(tmp_path / "a.pt")
            await until(lambda: tmp_path / "a.pt" in landed, "the first file")
            write(tmp_path / "b.pt")
            await until(lambda: tmp_path / "b.pt" in landed, "the second file")
            assert tmp_path / "boom.pt" not in landed
        finally:
            await watcher.stop()

    run(body)


def test_force_polling_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FORCE_POLLING_ENV, "1")

    async def body() -> None:
        rec = Recorder()
        async with watching([tmp_path], rec, poll_interval_s=0.1):
            assert any(isinstance(t, PollingEmitter) for t in watchdog_threads())
            write(tmp_path / "ckpt.pt")
            await until(lambda: rec.landed, "the polled file")

    run(body)


def test_stop_leaves_no_threads_and_is_idempotent(tmp_path: Path) -> None:
    async def body() -> None:
        watcher = CheckpointWatcher([tmp_path, tmp_path / "missing"], lambda landed: None)
        await watcher.start()
        assert watchdog_threads() != []
        await watcher.stop()
        await watcher.stop()
        assert watchdog_threads() == []

    run(body)
