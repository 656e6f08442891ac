"""The checks between a resume plan and a launch: has the trainer's config changed since
the last launch (drift), and has the last attempt let go of the GPU?

`check` reports what it found as facts on the `Prepared` event; the core decides what
they mean (a refusal, a warning, a kill of the last attempt's leftovers). The new config
fingerprint is kept only once a launch goes ahead (`launched`), so a refused change is
found again by the next supervisor. The GPU wait is best effort: past its timeout it
says so, and the core has what is left of the last attempt killed (`kill_leftovers`).
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import replace
from pathlib import Path

import structlog

from supervisor.config import Config
from supervisor.core import ConfigChange, Prepared
from supervisor.daemon import drift
from supervisor.ledger import Ledger
from supervisor.process import gpu
from supervisor.process.sessions import marked_processes, signal_session
from trainer_adapters.base import TrainerAdapter

log = structlog.get_logger("supervisor")


class Preflight:
    def __init__(
        self,
        config: Config,
        adapter: TrainerAdapter,
        ledger: Ledger,
        probe: gpu.GuardedProbe,
    ) -> None:
        self.config = config
        self.adapter = adapter
        self.ledger = ledger
        self.probe = probe
        self._gpu_baseline: set[int] = set()
        self._kept_out: set[int] = set()  # leftovers once kept out of a baseline
        self._fingerprint: str | None = None  # of this launch's config, kept once it launches

    async def start(self) -> None:
        """Processes on the GPU before the supervisor launches anything are not ours."""
        self._gpu_baseline = await gpu.gpu_pids(self.probe)

    async def check(self, prepared: Prepared, last_marker: str | None) -> Prepared:
        """`prepared` with what the checks found. Each is advice: a failing one is
        logged, never skips the other, and never stands in the launch's way."""
        change = None
        try:
            change = self._check_drift()
        except Exception:
            self._fingerprint = None  # unchecked: it must not become what the next launch is compared with
            log.exception("error in the config drift check; launching without it")
        held, leftover = None, set[int]()
        try:
            if last_marker is not None:
                held, leftover = await self._wait_gpu(last_marker)
            # What still held the GPU for the last attempt is ours (the core has it killed),
            # not someone else's job: the next wait waits for it too, but once only: in a
            # pid namespace of its own another user's job looks exited (see gpu.py), and
            # must not cost every later relaunch the whole timeout.
            once = leftover - self._kept_out
            self._kept_out |= once
            self._gpu_baseline = await gpu.gpu_pids(self.probe) - once
        except Exception:
            log.exception("error while waiting for the GPU; launching anyway")
        return replace(prepared, config_change=change, gpu_held=held)

    def launched(self, attempt: int) -> None:
        """The launch went ahead: its config is what the next launch is compared with. The
        trainer runs already, so a failing write is logged, never raised."""
        fingerprint, self._fingerprint = self._fingerprint, None
        if fingerprint is None:
            return
        try:
            self.ledger.add_fingerprint(attempt, time.time(), fingerprint)
        except Exception:
            log.exception(
                "error recording the config fingerprint; the next launch is compared with the last one kept"
            )

    def kill_leftovers(self, last_marker: str | None) -> None:
        """SIGKILL every process of the last attempt still alive (marked by its marker)."""
        if last_marker is not None:
            signal_session(None, signal.SIGKILL, marked_processes(last_marker))

    # --- config drift -------------------------------------------------------------------

    def config_files(self) -> list[Path]:
        if self.config.drift.files is not None:
            return list(self.config.drift.files)
        if self.adapter.config_files is None:
            return []
        found = self.adapter.config_files(self.config.run.command, self.config.adapter.options)
        return [Path(os.path.abspath(self.config.cwd / name)) for name in found]

    def _check_drift(self) -> ConfigChange | None:
        self._fingerprint = None
        paths = self.config_files()
        if not paths:
            return None
        now = drift.fingerprint(paths, self.adapter.config_ignore_keys)
        self._fingerprint = now.to_json()
        last = self.ledger.last_fingerprint()
        if last is None:
            return None
        try:
            before = drift.Fingerprint.from_json(last[1])
        except ValueError as exc:  # unreadable: this launch's fingerprint replaces it
            log.warning("the last config fingerprint is unreadable", error=str(exc))
            return None
        changed = drift.changes(before, now)
        return ConfigChange(since=last[0], summary="; ".join(changed)) if changed else None

    # --- GPU ------------------------------------------------------------------------------

    async def _wait_gpu(self, last_marker: str) -> tuple[str | None, set[int]]:
        """None once the last attempt's processes are off the GPU; else, past the
        timeout, how they still hold it, and their pids."""
        marked: tuple[float, set[int]] = (-1.0, set())

        def is_ours(pid: int) -> bool:
            nonlocal marked
            now = time.monotonic()
            if now - marked[0] > self.config.gpu.poll_s / 2:  # one /proc scan per poll
                marked = (now, set(marked_processes(last_marker)))
            return pid in marked[1]

        gpu_settings = self.config.gpu
        result = await gpu.wait_released(
            self.probe,
            baseline_pids=self._gpu_baseline,
            is_ours=is_ours,
            timeout_s=gpu_settings.release_timeout_s,
            poll_s=gpu_settings.poll_s,
        )
        if result.released:
            if result.waited_s >= gpu_settings.poll_s:
                log.info("the last attempt's GPU memory is released", waited_s=round(result.waited_s, 1))
            return None, set()
        return result.describe(), set(result.leftover_pids)
