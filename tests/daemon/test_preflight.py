"""Between the plan and the launch: the GPU wait (with a fake GPU: the one thing that
cannot exist here) driven by the real daemon and real trainer processes, and Applio's
TensorBoard losses read while a real writer keeps writing."""

from __future__ import annotations

import asyncio
import math
import sqlite3
import subprocess
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

import trainer_adapters
from supervisor.config import load
from supervisor.core import Event, Prepared, Progress
from supervisor.daemon import drift
from supervisor.daemon.loop import Daemon
from supervisor.daemon.preflight import Preflight
from supervisor.ledger import Ledger
from supervisor.process import gpu
from supervisor.signals.output_reader import metrics_progress
from supervisor.signals.progress_sources import MetricsPoller
from supervisor.signals.tensorboard import Scalar
from tests.support.load import scaled
from tests.support.procs import behave, wait_for
from trainer_adapters.base import Metrics

pytestmark = pytest.mark.timeout(120)


class LingeringGpu:
    """Lists each trainer's pid for `polls` more polls after it died (the driver has not
    freed its memory yet), and another user's live job all along."""

    name = "fake"

    def __init__(self, polls: int, foreign_pid: int) -> None:
        self.polls = polls
        self.foreign_pid = foreign_pid
        self.dead: dict[int, int] = {}  # pid -> polls left
        self.calls = 0
        self.lingering_at_launch: list[int] = []  # polls of dead trainers left at each launch

    def compute_processes(self) -> list[gpu.GpuProcess]:
        self.calls += 1
        listed = [gpu.GpuProcess(0, self.foreign_pid, 2**30)]
        for pid, left in list(self.dead.items()):
            if left > 0:
                listed.append(gpu.GpuProcess(0, pid, 2**30))
                self.dead[pid] = left - 1
        return listed


def config_file(tmp_path: Path, command: list[str], release_timeout_s: float, max_attempts: int = 3) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(
        f"[run]\ncommand = {command!r}\nstate_dir = '{tmp_path / 'state'}'\n".replace("'", '"')
        + f"[restart]\nbackoff_initial_s = 0\nbackoff_max_s = 0\nmax_attempts_without_progress = {max_attempts}\n"
        + f"[gpu]\nrelease_timeout_s = {release_timeout_s}\npoll_s = 0.05\n"
    )
    return path


def run_daemon(path: Path, probe: LingeringGpu) -> int:
    config = load(path)
    ledger = Ledger.open(config.state_dir)
    daemon = Daemon(config, ledger, gpu_probe=probe)
    original = daemon._launch

    def launch_and_remember(attempt: int, remedies: object) -> None:
        probe.lingering_at_launch.append(sum(probe.dead.values()))
        original(attempt, remedies)  # type: ignore[arg-type]
        if daemon.trainer is not None:
            probe.dead[daemon.trainer.pid] = probe.polls  # listed until `polls` polls after exit

    daemon._launch = launch_and_remember  # type: ignore[method-assign]
    try:
        return asyncio.run(daemon.run())
    finally:
        ledger.close()


def events(tmp_path: Path, kind: str) -> list[str]:
    with sqlite3.connect(tmp_path / "state" / "ledger.sqlite3") as conn:
        return [m for (m,) in conn.execute("SELECT message FROM events WHERE kind = ?", (kind,))]


def test_a_relaunch_waits_until_the_dead_trainer_leaves_the_gpu(tmp_path: Path) -> None:
    other = subprocess.Popen(
        behave("sleep", str(tmp_path / "foreign.pid"))
    )  # another user's job: alive and on the GPU all along
    try:
        pid = int(wait_for(lambda: _read(tmp_path / "foreign.pid"), what="the foreign job"))
        probe = LingeringGpu(polls=5, foreign_pid=pid)
        counter = tmp_path / "starts"
        code = run_daemon(config_file(tmp_path, behave("crash-until", str(counter), "2"), 30.0), probe)
    finally:
        other.kill()
        other.wait()
    assert code == 0
    # Each relaunch waited out the dead trainer's lingering listing, never the foreign job.
    assert probe.lingering_at_launch == [0, 0]
    assert probe.calls >= 5
    assert events(tmp_path, "gpu_not_released") == []


def test_past_its_timeout_the_wait_gives_up_and_relaunches_anyway(tmp_path: Path) -> None:
    probe = LingeringGpu(polls=10**9, foreign_pid=1)
    counter = tmp_path / "starts"
    code = run_daemon(config_file(tmp_path, behave("crash-until", str(counter), "2"), 0.3), probe)
    assert code == 0
    (message,) = events(tmp_path, "gpu_not_released")
    assert "still held by pid" in message
    assert message.endswith("relaunching anyway")


def test_what_outlived_a_wait_is_waited_for_once_more_not_at_every_relaunch(tmp_path: Path) -> None:
    """Each dead trainer stays listed (the driver never frees it). The wait before the
    next launch times out on it; the one after must still count it as ours, not as a
    process that was on the GPU before the launch. But only once more: in a pid namespace
    of its own another user's job looks exited too, and must not hold up every relaunch."""
    probe = LingeringGpu(polls=10**9, foreign_pid=1)
    counter = tmp_path / "starts"
    code = run_daemon(config_file(tmp_path, behave("crash-until", str(counter), "4"), 0.3, 5), probe)
    assert code == 0
    first, second, third = list(probe.dead)[:3]
    before_2, before_3, before_4 = events(tmp_path, "gpu_not_released")
    assert f"pid {first} " in before_2
    assert f"pid {first} " in before_3
    assert f"pid {second} " in before_3
    assert f"pid {first} " not in before_4, "kept out of the baseline once, not twice"
    assert f"pid {second} " in before_4
    assert f"pid {third} " in before_4


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


@pytest.mark.slow
def test_applio_tensorboard_losses_become_readings_and_old_ones_are_skipped(tmp_path: Path) -> None:
    tensorboardx = pytest.importorskip("tensorboardX")
    eval_dir = tmp_path / "eval"
    old = tensorboardx.SummaryWriter(str(eval_dir))
    old.add_scalar("loss_avg_50/g/total", math.nan, 50)  # an earlier attempt's: history
    old.close()
    got: list[Event] = []

    async def main() -> None:
        poller = MetricsPoller(
            eval_dir,
            Metrics(directory=lambda options, d: d, tags=r"^loss"),
            lambda step, values: got.append(_progress(step, values)),
        )
        reads: list[int] = []
        read = poller.reader.poll

        def counted() -> list[Scalar]:
            scalars = read()
            reads.append(len(scalars))
            return scalars

        poller.reader.poll = counted  # type: ignore[method-assign]
        poller.start()
        deadline = asyncio.get_running_loop().time() + scaled(20)
        while not reads and asyncio.get_running_loop().time() < deadline:  # it read the history
            await asyncio.sleep(0.01)
        writer = tensorboardx.SummaryWriter(
            str(eval_dir), filename_suffix=".attempt2", max_queue=1, flush_secs=1
        )
        for step, value in ((100, 31.5), (150, math.inf)):
            writer.add_scalar("loss_avg_50/g/total", value, step)
            writer.add_scalar("loss_avg_50/d/adv", 2.5, step)
            writer.add_scalar("grad_avg_50/norm_g", math.nan, step)  # not a loss: not read
        writer.flush()
        deadline = asyncio.get_running_loop().time() + scaled(20)
        while len(got) < 2 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        writer.close()
        await poller.stop()

    asyncio.run(main())
    assert [(e.nonfinite, e.line.split(":")[0]) for e in got if isinstance(e, Progress)] == [
        (False, "TensorBoard step 100"),
        (True, "TensorBoard step 150"),
    ]


def _progress(step: int, values: Sequence[tuple[str, float]]) -> Event:
    return metrics_progress(1, step, values)


def preflight_for(tmp_path: Path) -> tuple[Preflight, Ledger, Path]:
    watched = tmp_path / "conf.json"
    watched.write_text('{"lr": 0.0002}')
    path = tmp_path / "run.toml"
    path.write_text(
        f'[run]\ncommand = ["true"]\ncwd = "{tmp_path}"\nstate_dir = "{tmp_path / "state"}"\n\n'
        f'[drift]\nfiles = ["{watched}"]\n'
    )
    config = load(path)
    ledger = Ledger.open(config.state_dir)
    probe = gpu.guard(gpu.probe_from("off", 5.0), 5.0)
    return Preflight(config, trainer_adapters.get(config.adapter.name), ledger, probe), ledger, watched


def test_a_drift_check_that_fails_keeps_the_last_fingerprint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    preflight, ledger, watched = preflight_for(tmp_path)
    prepared = Prepared(1)
    asyncio.run(preflight.check(prepared, None))
    preflight.launched(1)
    kept = ledger.last_fingerprint()
    assert kept is not None
    watched.write_text('{"lr": 0.002}')

    def broken(before: object, now: object) -> list[str]:
        raise RuntimeError("a bug in the comparison")

    monkeypatch.setattr(drift, "changes", broken)
    checked = asyncio.run(preflight.check(replace(prepared, attempt=2), None))
    assert checked.config_change is None  # advice only: the launch goes ahead
    preflight.launched(2)
    assert ledger.last_fingerprint() == kept  # the unchecked config is not the new baseline
    monkeypatch.undo()
    checked = asyncio.run(preflight.check(replace(prepared, attempt=3), None))
    assert checked.config_change is not None
    assert "lr" in checked.config_change.summary
    ledger.close()


def test_a_fingerprint_that_cannot_be_written_after_the_launch_is_logged_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    preflight, ledger, _ = preflight_for(tmp_path)
    asyncio.run(preflight.check(Prepared(1), None))

    def locked(*args: object) -> None:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(ledger, "add_fingerprint", locked)
    preflight.launched(1)  # the trainer runs already: nothing may be raised into the loop
    monkeypatch.undo()
    assert ledger.last_fingerprint() is None
    ledger.close()
