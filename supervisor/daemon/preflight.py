"""The checks between a resume plan and a launch: has the trainer's config changed since
the last launch (drift), and has the last attempt let go of the GPU?

`check` returns a refusal (a one-line reason) or None; everything else it finds is a
ledger event and a log line. The GPU wait is best effort: past its timeout it logs,
kills what is left of the last attempt, and lets the launch go on.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import structlog

from supervisor.config import Config
from supervisor.daemon import drift
from supervisor.ledger import Ledger
from supervisor.process import gpu
from supervisor.process.trainer import marked_processes
from trainer_adapters.base import TrainerAdapter

log = structlog.get_logger("supervisor")


class Preflight:
    def __init__(
        self,
        config: Config,
        adapter: TrainerAdapter,
        ledger: Ledger,
        probe: gpu.GuardedProbe,
        *,
        accept_config_change: bool = False,
    ) -> None:
        self.config = config
        self.adapter = adapter
        self.ledger = ledger
        self.probe = probe
        self.accept_config_change = accept_config_change
        self._gpu_baseline: set[int] = set()

    async def start(self) -> None:
        """Processes on the GPU before the supervisor launches anything are not ours."""
        self._gpu_baseline = await gpu.gpu_pids(self.probe)

    async def check(self, attempt: int, last_marker: str | None) -> str | None:
        """Each check is advice, and a failing one never skips the other."""
        try:
            refusal = self._check_drift(attempt)
        except Exception:
            log.exception("error in the config drift check; launching without it")
            refusal = None
        if refusal is not None:
            return refusal
        try:
            if last_marker is not None:
                await self._wait_gpu(attempt, last_marker)
            self._gpu_baseline = await gpu.gpu_pids(self.probe)
        except Exception:
            log.exception("error while waiting for the GPU; launching anyway")
        return None

    # --- config drift -------------------------------------------------------------------

    def config_files(self) -> list[Path]:
        if self.config.drift.files is not None:
            return list(self.config.drift.files)
        if self.adapter.config_files is None:
            return []
        found = self.adapter.config_files(self.config.run.command, self.config.adapter.options)
        return [Path(os.path.abspath(self.config.cwd / name)) for name in found]

    def _check_drift(self, attempt: int) -> str | None:
        paths = self.config_files()
        if not paths:
            return None
        now = drift.fingerprint(paths, self.adapter.config_ignore_keys)
        last = self.ledger.last_fingerprint()
        before: drift.Fingerprint | None = None
        if last is not None:
            try:
                before = drift.Fingerprint.from_json(last[1])
            except ValueError as exc:  # unreadable: this launch's fingerprint replaces it
                log.warning("the last config fingerprint is unreadable", error=str(exc))
        if last is not None and before is not None:
            before_attempt = last[0]
            changed = drift.changes(before, now)
            if changed:
                summary = "; ".join(changed)
                refuse = self.config.drift.policy == "refuse" and not self.accept_config_change
                if refuse:
                    self.ledger.tell(attempt, "config_drift", "error", f"config changed: {summary}")
                    return (
                        f"the trainer's config changed since attempt {before_attempt} ({summary}); "
                        "[drift] policy = 'refuse': restore it, or run with --accept-config-change"
                    )
                self.ledger.tell(
                    attempt,
                    "config_drift",
                    "warning",
                    f"the trainer's config changed since attempt {before_attempt}: {summary}",
                )
        self.ledger.add_fingerprint(attempt, time.time(), now.to_json())
        self.ledger.commit()
        return None

    # --- GPU ------------------------------------------------------------------------------

    async def _wait_gpu(self, attempt: int, last_marker: str) -> None:
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
            return
        for pid in marked_processes(last_marker):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        self.ledger.tell(attempt, "gpu_not_released", "warning", f"{result.describe()}; relaunching anyway")
