"""Wait until the previous attempt's processes are gone from the GPU before a relaunch.

A trainer that was killed can leave GPU memory behind for a while: DataLoader workers
that outlived it, or a process that is gone from /proc but whose memory the driver has
not reclaimed yet. Relaunching into that memory makes the new attempt die of CUDA OOM.
So before a relaunch we poll the driver (NVML) until no GPU process is ours-or-orphan,
or a timeout passes; then the caller relaunches anyway (best effort, like NVIDIA
resiliency-ext's 50 s reclaim wait).

NVML calls can hang forever on a sick GPU. Every call therefore runs in its own daemon
thread under a timeout (a daemon thread, not an executor's: a hung executor thread would
block interpreter exit and `asyncio.run`'s shutdown). After one timeout the probe is
marked sick and never called again in this process, so at most one thread can hang.

The driver reports pids of the host's pid namespace. In a container with its own, they
do not match /proc: everything listed looks exited, so only the baseline (the pids
listed before our launch) keeps other jobs out, and one started since holds up a
relaunch until the timeout, at most twice (a leftover that outlived a wait is waited for
once more: it may be the last attempt's own).

nvidia-ml-py (`pip install 'train-supervisor[gpu]'`, import name `pynvml`) is optional
and imported only when a probe is made; without it, or without a driver, `auto` gives
`NoGpu`, which lists nothing: a clean no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol, TypeVar

import structlog

from supervisor.process.procfs import running

log = structlog.get_logger("supervisor.gpu")

CALL_TIMEOUT_S = 5.0
SETTINGS = ("auto", "off", "nvml")
INSTALL_HINT = "pip install 'train-supervisor[gpu]'"
T = TypeVar("T")


@dataclass(frozen=True)
class GpuProcess:
    """One process the driver lists as a compute user of a GPU."""

    gpu: int  # device index as NVML numbers it
    pid: int  # as the driver sees it (the host's pid namespace)
    used_bytes: int | None  # None where the driver does not say


class GpuProbe(Protocol):
    """Lists GPU compute processes. May block, hang or raise: callers go through `guard`."""

    name: str

    def compute_processes(self) -> list[GpuProcess]: ...


class GpuUnavailable(RuntimeError):
    """The GPU probe cannot answer; str() is one line saying why."""


class NoGpu:
    """No NVML (not installed, no driver) or checks turned off: lists nothing."""

    name = "none"

    def __init__(self, reason: str = "GPU checks are off") -> None:
        self.reason = reason

    def compute_processes(self) -> list[GpuProcess]:
        return []


class NvmlProbe:
    """Compute processes on every GPU, through NVML. `nvml` is the pynvml module (tests
    pass a stand-in); NVML is initialised on first use, once."""

    name = "nvml"

    def __init__(self, nvml: ModuleType | None = None) -> None:
        self._nvml: Any = nvml if nvml is not None else _import_pynvml()
        self._initialised = False

    def init(self) -> None:
        if not self._initialised:
            self._nvml.nvmlInit()
            self._initialised = True

    def compute_processes(self) -> list[GpuProcess]:
        self.init()
        found: list[GpuProcess] = []
        for index in range(int(self._nvml.nvmlDeviceGetCount())):
            handle = self._nvml.nvmlDeviceGetHandleByIndex(index)
            found.extend(_process(index, info) for info in self._device_processes(handle))
        return found

    def _device_processes(self, handle: object) -> list[Any]:
        try:
            return list(self._nvml.nvmlDeviceGetComputeRunningProcesses(handle))
        except Exception as e:
            # pynvml newer than the driver: the unversioned call wants _v3, which old
            # drivers lack; _v2 has the fields we read.
            fallback = getattr(self._nvml, "nvmlDeviceGetComputeRunningProcesses_v2", None)
            if fallback is None or type(e).__name__ not in _VERSION_ERRORS:
                raise
            return list(fallback(handle))


_VERSION_ERRORS = {"NVMLLibraryMismatchError", "NVMLError_FunctionNotFound"}


def _process(index: int, info: Any) -> GpuProcess:
    used = getattr(info, "usedGpuMemory", None)  # pynvml gives None for "not available"
    return GpuProcess(gpu=index, pid=int(info.pid), used_bytes=used if isinstance(used, int) else None)


def _import_pynvml() -> ModuleType:
    try:
        return importlib.import_module("pynvml")
    except ImportError as e:
        raise GpuUnavailable(f"nvidia-ml-py is not installed ({INSTALL_HINT})") from e


# --- calls under a timeout --------------------------------------------------------------


def _in_daemon_thread(fn: Callable[[], T], name: str) -> asyncio.Future[T]:
    """Run `fn` in a new daemon thread; its result arrives in a future of this loop."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        if not future.done():
            outcome()

    def work() -> None:
        deliver: Callable[[], None]
        try:
            deliver = functools.partial(future.set_result, fn())
        except Exception as e:  # a BaseException ends the thread: the call then times out
            deliver = functools.partial(future.set_exception, e)
        # RuntimeError: the loop closed while the call hung; nobody is waiting.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, deliver)

    threading.Thread(target=work, name=name, daemon=True).start()
    return future


class GuardedProbe:
    """A probe whose calls run under `call_timeout_s`. After one timeout it is sick for
    good: it never calls the probe again and says why, logged once."""

    def __init__(self, probe: GpuProbe, call_timeout_s: float = CALL_TIMEOUT_S) -> None:
        self.probe = probe
        self.name = probe.name
        self.call_timeout_s = call_timeout_s
        self.sick: str | None = None

    async def processes(self) -> list[GpuProcess]:
        """The probe's list; GpuUnavailable if it raised, hung, or hung before."""
        if self.sick is not None:
            raise GpuUnavailable(self.sick)
        call = _in_daemon_thread(self.probe.compute_processes, f"gpu-probe-{self.name}")
        try:
            return await asyncio.wait_for(call, self.call_timeout_s)
        except Exception as e:
            if call.cancelled():  # wait_for gave up on it: the call hangs
                raise self._hung() from None
            raise GpuUnavailable(f"GPU probe {self.name} failed: {_one_line(e)}") from e

    def _hung(self) -> GpuUnavailable:
        self.sick = f"GPU probe {self.name} did not answer within {self.call_timeout_s:g}s"
        log.error("GPU probe hung; not asking it again in this run", probe=self.name, reason=self.sick)
        return GpuUnavailable(self.sick)


# Every probe ever guarded, by id (the guard keeps the probe, so the id stays its own):
# a sick probe stays sick for the life of the process.
_guards: dict[int, GuardedProbe] = {}


def guard(probe: GpuProbe | GuardedProbe, call_timeout_s: float = CALL_TIMEOUT_S) -> GuardedProbe:
    """The one GuardedProbe of `probe`, made on first use with `call_timeout_s` (later
    values are ignored). A GuardedProbe is returned as it is."""
    if isinstance(probe, GuardedProbe):
        return probe
    guarded = _guards.get(id(probe))
    if guarded is None:
        guarded = _guards[id(probe)] = GuardedProbe(probe, call_timeout_s)
    return guarded


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text or type(e).__name__


# --- waiting for release ----------------------------------------------------------------


@dataclass(frozen=True)
class ReleaseResult:
    released: bool
    waited_s: float
    leftover: tuple[GpuProcess, ...] = ()  # ours or orphaned, still listed at the end
    reason: str | None = None  # why not released (timeout, probe failure)
    probe: str = "none"

    @property
    def leftover_pids(self) -> tuple[int, ...]:
        return tuple(sorted({p.pid for p in self.leftover}))

    def describe(self) -> str:
        if self.released and self.probe == NoGpu.name:
            return "GPU release not checked (no GPU probe)"
        if self.released:
            return f"GPU released by the previous attempt's processes after {self.waited_s:.1f}s"
        holders = ", ".join(_describe_process(p) for p in self.leftover)
        held = f"; still held by {holders}" if holders else ""
        return f"GPU not confirmed released after {self.waited_s:.1f}s: {self.reason}{held}"


def _describe_process(p: GpuProcess) -> str:
    used = f", {p.used_bytes / 2**20:.0f} MiB" if p.used_bytes is not None else ""
    return f"pid {p.pid} (gpu {p.gpu}{used})"


def holding(
    listed: Collection[GpuProcess], baseline_pids: Collection[int], is_ours: Callable[[int], bool]
) -> list[GpuProcess]:
    """The listed processes a relaunch must wait for: ours, or exited (gone from /proc,
    or a zombie: memory not reclaimed yet) and not already listed before our launch.
    Running processes that are not ours are someone else's jobs."""
    return [p for p in listed if is_ours(p.pid) or (p.pid not in baseline_pids and not running(p.pid))]


async def wait_released(
    probe: GpuProbe | GuardedProbe,
    *,
    baseline_pids: Collection[int],
    is_ours: Callable[[int], bool],
    timeout_s: float,
    poll_s: float = 1.0,
    call_timeout_s: float = CALL_TIMEOUT_S,
) -> ReleaseResult:
    """Poll until no GPU process is ours-or-orphan, at most `timeout_s`. Returns at once,
    released=False with the reason, when the probe fails or hangs (never waits further)."""
    guarded = guard(probe, call_timeout_s)
    loop = asyncio.get_running_loop()
    start = loop.time()
    while True:
        try:
            left = holding(await guarded.processes(), baseline_pids, is_ours)
        except GpuUnavailable as e:
            return ReleaseResult(False, loop.time() - start, reason=str(e), probe=guarded.name)
        waited = loop.time() - start
        if not left:
            return ReleaseResult(True, waited, probe=guarded.name)
        if waited >= timeout_s:
            reason = f"still listed by {guarded.name} after the {timeout_s:g}s limit"
            return ReleaseResult(False, waited, tuple(left), reason, guarded.name)
        await asyncio.sleep(min(poll_s, timeout_s - waited))


async def gpu_pids(probe: GpuProbe | GuardedProbe, call_timeout_s: float = CALL_TIMEOUT_S) -> set[int]:
    """Pids now on any GPU (the baseline before a launch); empty if the probe cannot answer."""
    guarded = guard(probe, call_timeout_s)
    try:
        return {p.pid for p in await guarded.processes()}
    except GpuUnavailable as e:
        if guarded.sick is None:  # a sick probe has said so once already
            log.warning("could not list GPU processes", reason=str(e))
        return set()


# --- choosing a probe -------------------------------------------------------------------


def probe_from(setting: str, call_timeout_s: float = CALL_TIMEOUT_S) -> GpuProbe:
    """`off`: NoGpu. `nvml`: NvmlProbe, or GpuUnavailable (one line) if NVML cannot be
    used. `auto`: NvmlProbe where NVML works, else NoGpu. NVML is initialised here, in a
    daemon thread under `call_timeout_s`, so a wedged driver cannot hang startup; the
    probe's later calls (through `guard`, `gpu_pids`, `wait_released`) use it too."""
    if setting not in SETTINGS:
        raise ValueError(f"GPU probe must be one of {', '.join(SETTINGS)}, not {setting!r}")
    probe: GpuProbe = NoGpu()
    if setting != "off":
        try:
            probe = _working_nvml(call_timeout_s)
        except GpuUnavailable as e:
            if setting == "nvml":
                raise GpuUnavailable(f"GPU probe 'nvml' is unavailable: {e}") from e
            log.info("no NVML; GPU release checks are off", reason=str(e))
            probe = NoGpu(str(e))
    guard(probe, call_timeout_s)
    return probe


def _working_nvml(call_timeout_s: float) -> NvmlProbe:
    probe = NvmlProbe()
    failure: list[BaseException] = []

    def init() -> None:
        try:
            probe.init()
        except BaseException as e:
            failure.append(e)

    worker = threading.Thread(target=init, name="gpu-probe-init", daemon=True)
    worker.start()
    worker.join(call_timeout_s)
    if worker.is_alive():
        raise GpuUnavailable(f"NVML did not answer within {call_timeout_s:g}s")
    if failure:
        raise GpuUnavailable(f"NVML init failed: {_one_line(failure[0])}")
    return probe
