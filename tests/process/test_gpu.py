"""GPU release wait against scripted probes and real child processes (no GPU needed)."""

from __future__ import annotations

import asyncio
import ctypes.util
import os
import subprocess
import sys
import threading
import types
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

import supervisor.process.gpu
from supervisor.process.gpu import (
    GpuProcess,
    GpuUnavailable,
    NoGpu,
    NvmlProbe,
    ReleaseResult,
    gpu_pids,
    guard,
    holding,
    probe_from,
    wait_released,
)
from supervisor.process.sessions import ATTEMPT_MARKER_ENV, marked_processes
from tests.support.procs import alive, wait_for

MiB = 2**20
POLL_S = 0.02
ASYNC_LIMIT_S = 60.0
T = TypeVar("T")


class FakeGpu:
    """A probe whose answer is computed by `script(call_number)`; counts its calls."""

    name = "fake"

    def __init__(self, script: Callable[[int], list[GpuProcess]]) -> None:
        self.script = script
        self.calls = 0

    def compute_processes(self) -> list[GpuProcess]:
        self.calls += 1
        return self.script(self.calls)


class HungGpu:
    """A probe that hangs like NVML on a wedged driver, until the test releases it."""

    name = "hung"

    def __init__(self) -> None:
        self.calls = 0
        self.release = threading.Event()

    def compute_processes(self) -> list[GpuProcess]:
        self.calls += 1
        self.release.wait(ASYNC_LIMIT_S)
        return []


class BrokenGpu:
    name = "broken"

    def __init__(self) -> None:
        self.calls = 0

    def compute_processes(self) -> list[GpuProcess]:
        self.calls += 1
        raise RuntimeError("Unknown Error\n(GPU is lost)")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, ASYNC_LIMIT_S))


def on_gpu(*pids: int, used: int | None = 512 * MiB) -> list[GpuProcess]:
    return [GpuProcess(gpu=0, pid=pid, used_bytes=used) for pid in pids]


def never_ours(pid: int) -> bool:
    return False


def vanished_pid() -> int:
    """The pid of a child that has exited and been reaped: not in /proc any more."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not Path(f"/proc/{child.pid}").exists()
    return child.pid


@pytest.fixture
def marker(tmp_path: Path) -> str:
    return f"test-gpu:{tmp_path.name}"


@pytest.fixture
def ours(marker: str) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """Spawns sleeping children that carry this test's attempt marker; kills them after."""
    children: list[subprocess.Popen[bytes]] = []

    def spawn() -> subprocess.Popen[bytes]:
        env = {**os.environ, ATTEMPT_MARKER_ENV: marker}
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], env=env)
        children.append(child)
        wait_for(lambda: child.pid in marked_processes(marker), what="the marked child")
        return child

    yield spawn
    for child in children:
        child.kill()
        child.wait()


def is_ours(marker: str) -> Callable[[int], bool]:
    return lambda pid: pid in marked_processes(marker)


# --- which listed processes hold up a relaunch ------------------------------------------


def test_foreign_live_processes_are_ignored() -> None:
    foreign = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        probe = FakeGpu(lambda _: on_gpu(foreign.pid, os.getpid()))
        result: ReleaseResult = run(
            wait_released(probe, baseline_pids=set(), is_ours=never_ours, timeout_s=30, poll_s=POLL_S)
        )
    finally:
        foreign.kill()
        foreign.wait()
    assert result.released
    assert result.leftover == ()
    assert probe.calls == 1


def test_vanished_pid_in_the_baseline_is_not_ours() -> None:
    gone = vanished_pid()
    assert holding(on_gpu(gone), baseline_pids={gone}, is_ours=never_ours) == []
    assert holding(on_gpu(gone), baseline_pids=set(), is_ours=never_ours) == on_gpu(gone)


def test_waits_while_a_vanished_pid_is_still_listed() -> None:
    gone = vanished_pid()
    probe = FakeGpu(lambda call: on_gpu(gone) if call <= 5 else [])
    result: ReleaseResult = run(
        wait_released(probe, baseline_pids=set(), is_ours=never_ours, timeout_s=30, poll_s=POLL_S)
    )
    assert result.released
    assert probe.calls == 6
    assert "released" in result.describe()


def test_waits_for_our_leftover_then_for_the_driver_to_let_go(
    ours: Callable[[], subprocess.Popen[bytes]], marker: str
) -> None:
    child = ours()
    gone_polls: list[int] = []

    def driver(call: int) -> list[GpuProcess]:
        # The driver lists the child while it lives and for three polls after it died.
        if alive(child.pid):
            return on_gpu(child.pid)
        gone_polls.append(call)
        return on_gpu(child.pid) if len(gone_polls) <= 3 else []

    probe = FakeGpu(driver)

    async def body() -> ReleaseResult:
        waiting = asyncio.create_task(
            wait_released(probe, baseline_pids=set(), is_ours=is_ours(marker), timeout_s=60, poll_s=POLL_S)
        )
        while probe.calls < 3:
            await asyncio.sleep(POLL_S)
        assert not waiting.done()
        child.kill()
        await asyncio.to_thread(child.wait)
        return await waiting

    result: ReleaseResult = run(body())
    assert result.released
    assert len(gone_polls) == 4


def test_timeout_reports_our_leftovers(ours: Callable[[], subprocess.Popen[bytes]], marker: str) -> None:
    child = ours()
    foreign = os.getpid()
    probe = FakeGpu(lambda _: [GpuProcess(1, child.pid, 3 * 1024 * MiB), *on_gpu(foreign)])
    result: ReleaseResult = run(
        wait_released(probe, baseline_pids=set(), is_ours=is_ours(marker), timeout_s=0.3, poll_s=POLL_S)
    )
    assert not result.released
    assert result.leftover_pids == (child.pid,)
    assert result.waited_s >= 0.3
    assert result.reason is not None
    assert "0.3s limit" in result.reason
    assert f"pid {child.pid} (gpu 1, 3072 MiB)" in result.describe()
    assert "\n" not in result.describe()


def test_a_zero_timeout_still_looks_once() -> None:
    probe = FakeGpu(lambda _: on_gpu(vanished_pid()))
    result: ReleaseResult = run(
        wait_released(probe, baseline_pids=set(), is_ours=never_ours, timeout_s=0, poll_s=POLL_S)
    )
    assert not result.released
    assert probe.calls == 1


# --- probes that fail -------------------------------------------------------------------


class Recorder:
    """Stands in for the module's structlog logger."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def __getattr__(self, level: str) -> Callable[..., None]:
        return lambda event, **_: self.lines.append((level, event))


def test_a_hung_probe_times_out_and_is_never_called_again(monkeypatch: pytest.MonkeyPatch) -> None:
    logged = Recorder()
    monkeypatch.setattr(supervisor.process.gpu, "log", logged)
    probe = HungGpu()
    try:
        first: ReleaseResult = run(
            wait_released(probe, baseline_pids=set(), is_ours=never_ours, timeout_s=30, call_timeout_s=0.2)
        )
        second: ReleaseResult = run(
            wait_released(probe, baseline_pids=set(), is_ours=never_ours, timeout_s=30)
        )
        baseline: set[int] = run(gpu_pids(probe))
    finally:
        probe.release.set()
    assert not first.released
    assert first.reason == "GPU probe hung did not answer within 0.2s"
    assert second.reason == first.reason
    assert not second.released
    assert baseline == set()
    assert probe.calls == 1
    assert guard(probe).sick == first.reason
    assert first.reason in first.describe()
    assert logged.lines == [("error", "GPU probe hung; not asking it again in this run")]


def test_a_hung_probe_does_not_block_the_event_loop_shutdown() -> None:
    # asyncio.run joins its default executor on the way out: a call hung there would
    # hang this test (and the supervisor's exit) instead of returning.
    probe = HungGpu()
    probe.name = "hung-at-exit"
    try:
        result: ReleaseResult = run(
            wait_released(probe, baseline_pids=set(), is_ours=never_ours, timeout_s=5, call_timeout_s=0.1)
        )
        assert not result.released
        # run() has returned while the call still hangs, in a daemon thread.
        (hung,) = [t for t in threading.enumerate() if t.name == "gpu-probe-hung-at-exit"]
        assert hung.daemon
    finally:
        probe.release.set()


def test_a_raising_probe_fails_the_wait_but_is_asked_again_next_time(monkeypatch: pytest.MonkeyPatch) -> None:
    logged = Recorder()
    monkeypatch.setattr(supervisor.process.gpu, "log", logged)
    probe = BrokenGpu()
    first: ReleaseResult = run(wait_released(probe, baseline_pids=set(), is_ours=never_ours, timeout_s=30))
    second: ReleaseResult = run(wait_released(probe, baseline_pids=set(), is_ours=never_ours, timeout_s=30))
    assert not first.released
    assert first.reason == "GPU probe broken failed: Unknown Error (GPU is lost)"
    assert not second.released
    assert run(gpu_pids(probe)) == set()
    assert probe.calls == 3
    assert guard(probe).sick is None
    assert logged.lines == [("warning", "could not list GPU processes")]


def test_a_probe_raising_timeout_error_is_not_taken_for_hung() -> None:
    def socket_timeout(call: int) -> list[GpuProcess]:
        raise TimeoutError("timed out")

    probe = FakeGpu(socket_timeout)
    result: ReleaseResult = run(wait_released(probe, baseline_pids=set(), is_ours=never_ours, timeout_s=30))
    assert result.reason == "GPU probe fake failed: timed out"
    assert guard(probe).sick is None


def test_gpu_pids_lists_every_gpu_user() -> None:
    probe = FakeGpu(lambda _: [GpuProcess(0, 11, None), GpuProcess(1, 12, MiB), GpuProcess(1, 11, MiB)])
    pids: set[int] = run(gpu_pids(probe))
    assert pids == {11, 12}


# --- no GPU -----------------------------------------------------------------------------


def test_no_gpu_is_released_at_once() -> None:
    result: ReleaseResult = run(wait_released(NoGpu(), baseline_pids=set(), is_ours=never_ours, timeout_s=30))
    assert result.released
    assert result.describe() == "GPU release not checked (no GPU probe)"
    assert run(gpu_pids(NoGpu())) == set()


def test_probe_from_off_and_bad_settings() -> None:
    assert isinstance(probe_from("off"), NoGpu)
    with pytest.raises(ValueError, match="one of auto, off, nvml"):
        probe_from("cuda")


def test_probe_from_auto_on_this_machine_does_not_raise() -> None:
    probe = probe_from("auto")
    assert isinstance(probe, NoGpu | NvmlProbe)
    if ctypes.util.find_library("nvidia-ml") is None:
        assert isinstance(probe, NoGpu)


def test_probe_from_nvml_on_this_machine_raises_one_clear_line() -> None:
    if ctypes.util.find_library("nvidia-ml") is not None:
        pytest.skip("this machine has an NVIDIA driver")
    with pytest.raises(GpuUnavailable) as raised:
        probe_from("nvml")
    message = str(raised.value)
    assert message.startswith("GPU probe 'nvml' is unavailable: ")
    assert "\n" not in message


def test_without_nvidia_ml_py(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    probe = probe_from("auto")
    assert isinstance(probe, NoGpu)
    assert "nvidia-ml-py is not installed" in probe.reason
    with pytest.raises(GpuUnavailable, match=r"not installed \(pip install 'train-supervisor\[gpu\]'\)"):
        probe_from("nvml")


# --- NvmlProbe against a stand-in pynvml module -----------------------------------------


class NVMLError(Exception):
    pass


class NVMLError_FunctionNotFound(NVMLError):  # pynvml's own spelling
    pass


def fake_pynvml(
    devices: list[list[types.SimpleNamespace]],
    init: Callable[[], None] = lambda: None,
    v3_missing: bool = False,
) -> types.ModuleType:
    """The few pynvml functions NvmlProbe uses, answering from `devices`."""
    nvml = types.ModuleType("pynvml")
    calls: dict[str, int] = {"init": 0}

    def nvml_init() -> None:
        calls["init"] += 1
        init()

    def running(handle: int) -> list[types.SimpleNamespace]:
        if v3_missing:
            raise NVMLError_FunctionNotFound("Function Not Found")
        return devices[handle]

    nvml.calls = calls  # type: ignore[attr-defined]
    nvml.nvmlInit = nvml_init  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetCount = lambda: len(devices)  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetHandleByIndex = lambda index: index  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetComputeRunningProcesses = running  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetComputeRunningProcesses_v2 = lambda handle: devices[handle]  # type: ignore[attr-defined]
    return nvml


def info(pid: int, used: int | None) -> types.SimpleNamespace:
    return types.SimpleNamespace(pid=pid, usedGpuMemory=used, gpuInstanceId=0xFFFFFFFF)


@pytest.mark.parametrize("v3_missing", [False, True])
def test_nvml_probe_lists_every_device(v3_missing: bool) -> None:
    nvml = fake_pynvml([[info(10, 5 * MiB)], [], [info(11, None), info(10, MiB)]], v3_missing=v3_missing)
    probe = NvmlProbe(nvml)
    assert probe.compute_processes() == [
        GpuProcess(0, 10, 5 * MiB),
        GpuProcess(2, 11, None),
        GpuProcess(2, 10, MiB),
    ]
    probe.compute_processes()
    assert nvml.calls["init"] == 1


def test_probe_from_uses_a_working_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([[info(10, MiB)]]))
    for setting in ("auto", "nvml"):
        probe = probe_from(setting, call_timeout_s=2.5)
        assert isinstance(probe, NvmlProbe)
        assert probe.compute_processes() == [GpuProcess(0, 10, MiB)]
        assert guard(probe).call_timeout_s == 2.5  # later calls run under it too


def test_nvml_without_a_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_library() -> None:
        raise NVMLError("NVML Shared Library Not Found")

    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([], init=no_library))
    probe = probe_from("auto")
    assert isinstance(probe, NoGpu)
    assert probe.reason == "NVML init failed: NVML Shared Library Not Found"
    with pytest.raises(
        GpuUnavailable, match=r"^GPU probe 'nvml' is unavailable: NVML init failed: NVML Shared"
    ):
        probe_from("nvml")


def test_nvml_init_that_hangs_does_not_hang_startup(monkeypatch: pytest.MonkeyPatch) -> None:
    wedged = threading.Event()

    def hang() -> None:
        wedged.wait(ASYNC_LIMIT_S)

    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([], init=hang))
    try:
        probe = probe_from("auto", call_timeout_s=0.2)
        assert isinstance(probe, NoGpu)
        assert probe.reason == "NVML did not answer within 0.2s"
        with pytest.raises(GpuUnavailable, match=r"did not answer within 0\.2s"):
            probe_from("nvml", call_timeout_s=0.2)
    finally:
        wedged.set()


def test_real_nvidia_ml_py_without_a_driver() -> None:
    pytest.importorskip("pynvml")
    if ctypes.util.find_library("nvidia-ml") is not None:
        pytest.skip("this machine has an NVIDIA driver")
    assert isinstance(probe_from("auto"), NoGpu)
    with pytest.raises(GpuUnavailable, match="NVML init failed: NVML Shared Library Not Found"):
        probe_from("nvml")
