"""A stop that takes too long: an edge that hangs in its stop is left behind and named
(the real daemon still exits), and a stuck loop has the stacks of its threads written
to stderr by the interpreter itself."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest
import structlog.testing

import supervisor.cli
from supervisor.cli.service import STOP_MARGIN_S
from supervisor.config import StopSection, load
from supervisor.daemon import overrun
from supervisor.daemon.loop import Daemon
from supervisor.daemon.telling import WEBHOOK_DRAIN_S
from supervisor.ledger import Ledger
from tests.support.load import scaled
from tests.support.procs import behave, wait_for


def test_an_edge_that_hangs_or_fails_in_its_stop_does_not_keep_the_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(overrun, "EDGE_STOP_TIMEOUT_S", 0.2)
    stopped: list[str] = []

    async def hangs() -> None:
        await asyncio.Event().wait()

    async def fails() -> None:
        raise OSError("socket already gone")

    async def stops() -> None:
        stopped.append("servers")

    async def ignores_its_cancellation() -> None:
        try:
            await asyncio.sleep(scaled(30))
        except asyncio.CancelledError:
            await asyncio.sleep(scaled(30))  # (as suppress(CancelledError) around an await did; a
            # second cancellation, asyncio.run's at the end, ends it)

    edges = [
        ("watcher", hangs),
        ("stubborn", ignores_its_cancellation),
        ("sources", fails),
        ("servers", stops),
    ]
    started = time.monotonic()
    with structlog.testing.capture_logs() as said:
        left = asyncio.run(overrun.stop_edges(edges))
    assert time.monotonic() - started < scaled(20), "a stop that ignores its cancellation is left behind"
    assert left == ["watcher", "stubborn"]
    assert stopped == ["servers"]
    assert [(x["event"], x["edge"]) for x in said] == [
        ("did not stop in time; exiting without it", "watcher"),
        ("did not stop in time; exiting without it", "stubborn"),
        ("error while stopping; going on with the others", "sources"),
    ]


def test_a_stop_stuck_past_its_time_writes_every_threads_stack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(overrun, "STOP_OVERRUN_S", 0.2)
    dump = tmp_path / "stderr"

    def stuck_in_a_blocking_call() -> None:
        wait_for(lambda: "Timeout" in dump.read_text(), what="the stack dump")

    async def main() -> None:
        watch = overrun.StopOverrun()
        watch.arm(0.1)
        try:
            stuck_in_a_blocking_call()  # the loop cannot run: only the interpreter's own thread can tell
        finally:
            watch.disarm()

    with dump.open("w") as stderr:
        monkeypatch.setattr(sys, "stderr", stderr)
        with structlog.testing.capture_logs() as said:
            asyncio.run(main())
    text = dump.read_text()
    assert "stuck_in_a_blocking_call" in text
    assert "most recent call first" in text
    assert said == [], "disarmed before the loop could run its own note"


def test_the_note_comes_from_the_loop_when_it_still_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(overrun, "STOP_OVERRUN_S", 0.05)

    async def main() -> None:
        watch = overrun.StopOverrun()
        watch.arm(0.0)
        watch.arm(10.0)  # once per run: a second arm changes nothing
        await asyncio.sleep(scaled(0.5))
        watch.disarm()

    with structlog.testing.capture_logs() as said:
        asyncio.run(main())
    (note,) = said
    assert note["event"].startswith("the supervisor is still stopping")
    assert note["after_s"] == pytest.approx(0.05)


def test_the_daemon_exits_without_an_edge_that_hangs_in_its_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(overrun, "EDGE_STOP_TIMEOUT_S", 0.5)
    config_path = tmp_path / "run.toml"
    command = behave("exit", "0")
    config_path.write_text(
        f"[run]\ncommand = {command!r}\nstate_dir = '{tmp_path / 'state'}'\n".replace("'", '"')
    )
    config = load(config_path)
    ledger = Ledger.open(config.state_dir)
    daemon = Daemon(config, ledger)

    async def never_stops() -> None:
        await asyncio.Event().wait()

    daemon.vitals.stop = never_stops  # type: ignore[method-assign]
    started = time.monotonic()
    try:
        with structlog.testing.capture_logs() as said:
            code = asyncio.run(daemon.run())
    finally:
        ledger.close()
    assert code == 0
    assert ("did not stop in time; exiting without it", "progress sources") in [
        (x["event"], x.get("edge")) for x in said
    ]
    assert time.monotonic() - started < scaled(60)
    assert not (tmp_path / "state" / "status.sock").exists(), "the edges after it were stopped"


def test_the_stop_fits_in_the_units_timeout_so_systemd_never_kills_first() -> None:
    """After the trainer's grace: every edge's bound and the exit's fit in the margin that
    install-service adds to grace_s for TimeoutStopSec, and the stack dump comes before."""
    edges = 3  # the checkpoint watcher (with the validator), the progress sources, the outputs
    ours = edges * overrun.EDGE_STOP_TIMEOUT_S + overrun.EXIT_GRACE_S
    assert ours < STOP_MARGIN_S
    assert WEBHOOK_DRAIN_S < overrun.EDGE_STOP_TIMEOUT_S, "the outputs' stop waits for the webhooks"
    assert overrun.STOP_OVERRUN_S < STOP_MARGIN_S
    units = sorted((Path(supervisor.cli.__file__).parent / "units").glob("*.service"))
    assert units
    for unit in units:
        (line,) = [x for x in unit.read_text().splitlines() if x.startswith("TimeoutStopSec=")]
        default_grace_s = StopSection().grace_s
        assert int(line.split("=")[1]) >= default_grace_s + STOP_MARGIN_S, unit.name


def test_a_thread_stuck_after_the_teardown_does_not_keep_the_process(tmp_path: Path) -> None:
    code = (
        "import threading\n"
        "from supervisor.daemon.overrun import exit_within\n"
        "def stuck_in_a_dead_share():\n"
        "    threading.Event().wait()\n"
        "threading.Thread(target=stuck_in_a_dead_share).start()  # not a daemon: exit waits for it\n"
        "exit_within(0.5, 7)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=scaled(60), check=False
    )
    assert result.returncode == 7
    assert "threads still running 0.5s after the teardown" in result.stderr
    assert "stuck_in_a_dead_share" in result.stderr


def test_without_a_usable_stderr_the_stop_goes_on_and_the_note_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(overrun, "STOP_OVERRUN_S", 0.05)
    monkeypatch.setattr(sys, "stderr", None)  # a supervisor started with fd 2 closed

    async def main() -> None:
        watch = overrun.StopOverrun()
        watch.arm(0.0)
        await asyncio.sleep(scaled(0.5))
        watch.disarm()

    with structlog.testing.capture_logs() as said:
        asyncio.run(main())
    (note,) = said
    assert "stderr is unusable for its stacks" in note["event"]
