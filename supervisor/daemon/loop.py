"""The daemon: wires the edges (signals, process, timers, ledger, logs) to the core.

Every input becomes an event on one asyncio queue; `core.decide` turns each into a new
state and a list of actions; `_execute` carries them out. Signal handlers only enqueue.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import secrets
import signal
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import asdict, replace
from typing import Any

import structlog

import trainer_adapters
from supervisor import core
from supervisor.checkpoints.pipeline import CheckpointGuard
from supervisor.config import Config
from supervisor.core.health import Remedy, Watch
from supervisor.daemon.attempts import launch_command, watch_exit
from supervisor.daemon.boot import Leftovers, restored
from supervisor.daemon.from_config import policy_for
from supervisor.daemon.housekeeping import DaemonChores, Housekeeping
from supervisor.daemon.overrun import StopOverrun, stop_edges
from supervisor.daemon.preflight import Preflight
from supervisor.daemon.status_view import snapshot_of
from supervisor.daemon.telling import Telling
from supervisor.ledger import AttemptRow, Ledger
from supervisor.outputs.status_socket import Snapshot
from supervisor.process import gpu
from supervisor.process.trainer import OutputTail, Trainer
from supervisor.process.trainer_log import OutputSink, RotatingLog
from supervisor.signals.oom_evidence import OomCounter, OomEvidence
from supervisor.signals.output_reader import OutputReader
from supervisor.signals.progress_sources import Vitals

log = structlog.get_logger("supervisor")


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
PROGRESS_SAVE_S = 5.0


class Daemon:
    def __init__(
        self,
        config: Config,
        ledger: Ledger,
        *,
        reset_counters: bool = False,
        again: bool = False,
        accept_config_change: bool = False,
        accept_model_change: bool = False,
        gpu_probe: gpu.GpuProbe | None = None,
    ) -> None:
        self.config = config
        self.ledger = ledger
        self.policy = replace(
            policy_for(config),
            refuse_config_change=config.drift.policy == "refuse" and not accept_config_change,
        )
        self.reset_counters = reset_counters
        self.again = again
        self.state = core.State()
        self.trainer: Trainer | None = None
        self.tail = OutputTail()
        self.trainer_log = RotatingLog(config.trainer_log, config.logs.max_bytes, config.logs.backups)
        self._queue: asyncio.Queue[core.Event] = asyncio.Queue()
        adapter = self.adapter = trainer_adapters.get(config.adapter.name)
        reader = OutputReader(
            adapter.lines, adapter.position_unit, lambda: self.state.attempt, self._queue.put_nowait
        )
        self.sink = OutputSink(self.trainer_log, [self.tail, reader])
        self._timers: list[asyncio.TimerHandle] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reclaim_kill: Callable[[], None] | None = None  # set while a reclaim runs
        self._unfinished: AttemptRow | None = None
        self.layout = adapter.layout(config.adapter.options)
        self.guard: CheckpointGuard | None = None
        if config.adapter.checkpoint_dir is not None:
            self.guard = CheckpointGuard(
                config,
                self.layout,
                ledger,
                self._queue.put_nowait,
                attempt=lambda: self.state.attempt,
                best_step=lambda: self.state.best_step,
                report=self._report,
                accept_model_change=accept_model_change,
            )
        self._last_marker: str | None = None  # of the newest attempt launched
        metrics_dir = None
        if adapter.metrics is not None and config.adapter.checkpoint_dir is not None:
            metrics_dir = adapter.metrics.directory(config.adapter.options, config.adapter.checkpoint_dir)
        self.vitals = Vitals(
            adapter,
            metrics_dir,
            config.state_dir,
            self._queue.put_nowait,
            attempt=lambda: self.state.attempt,
            marker=lambda: self._last_marker,
        )
        timeout = config.gpu.call_timeout_s
        probe = gpu.guard(gpu_probe or gpu.probe_from(config.gpu.probe, timeout), timeout)
        self.preflight = Preflight(config, adapter, ledger, probe)
        self.oom = OomCounter(events_path=config.oom.memory_events)
        self._oom_evidence: OomEvidence | None = None  # of the attempt running
        self.telling = Telling(config, ledger, lambda: self.state.attempt, self.snapshot)
        self.reporter = self.telling.reporter
        self.withheld_env = self.telling.withheld_env
        self._saved: core.State | None = None  # what the ledger holds (less the detectors' view)
        self._saved_at = -math.inf
        self._started_at, self._started_mono = time.time(), time.monotonic()
        guard = self.guard
        self.chores = DaemonChores.of(
            config,
            checkpoint_gb=self._checkpoint_gb,
            report=self._report,
            status=lambda: asdict(self.snapshot()),
            rescan=guard.rescan if guard is not None else None,
            retain=guard.retain if guard is not None else None,
        )
        self.housekeeping = Housekeeping(self.chores.chores())
        self.overrun = StopOverrun()

    # --- main loop ------------------------------------------------------------------

    async def run(self) -> int:
        loop = self._loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(
                sig, self._queue.put_nowait, core.StopRequested(f"{signal.Signals(sig).name} received")
            )
        try:
            self.state, boot = self._restore()
            await self.vitals.start()
            await self.telling.start()
            await self._check_disk()
            self.housekeeping.start()
            if self._unfinished is None:
                # What is on the GPU now is not ours. After a reclaim it may be: the wait
                # before the first launch then looks at every pid that leaves /proc.
                await self.preflight.start()
            if self.guard is not None:
                await self.guard.start()
            self.telling.ready(self.state)
            self._queue.put_nowait(boot)
            while True:
                event = await self._queue.get()
                exit_code = self._step(event)
                if exit_code is not None:
                    return exit_code
                await asyncio.sleep(0)  # let signals in even when events keep coming
        except Exception:
            await self._stop_trainer_on_error()
            raise
        finally:
            for sig in STOP_SIGNALS:
                loop.remove_signal_handler(sig)
            for handle in self._timers:
                handle.cancel()
            self.housekeeping.stop()
            self.overrun.arm(0.0)  # the teardown too: each part bounded, and said if it overruns
            edges = [("progress sources", self.vitals.stop), ("outputs", self.telling.stop)]
            try:
                await stop_edges([("checkpoint watcher", self.guard.stop), *edges] if self.guard else edges)
            finally:
                self.overrun.disarm()
                self.trainer_log.close()

    def _step(self, event: core.Event) -> int | None:
        assert self._loop is not None
        now = self._loop.time()
        self.state, actions = core.decide(self.state, event, now, self.policy)
        if self.state.phase is core.Phase.STOPPING and self.trainer and self.trainer.exited_at is None:
            self.overrun.arm(self.config.stop.grace_s)  # (a stop while preparing waits for that first)
        exit_code = None
        for action in actions:
            if isinstance(action, core.Finish):
                exit_code = action.exit_code
            else:
                self._execute(action, now)
        self._save(now)
        self.telling.notify(self.state)
        return exit_code

    # --- housekeeping -----------------------------------------------------------------

    async def _check_disk(self) -> None:
        """At start and before every launch, besides the periodic chore; advice only."""
        try:
            await self.chores.check_disk()
        except Exception:
            log.exception("could not check the free disk space")

    def _checkpoint_gb(self) -> float | None:
        """The size of the newest verified state (all its files), in GB."""
        best = self.state.best_step
        rows = self.ledger.verified_at_step(best) if best is not None else []
        return sum(row.version.size for row in rows) / 1e9 if rows else None

    def _report(self, kind: str, level: str, message: str) -> None:
        self.reporter.report(kind, level, message)

    # --- live status ----------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """What `status` shows while the supervisor runs (exact ages, from the loop's clock)."""
        assert self._loop is not None
        trainer = self.trainer
        return snapshot_of(
            self.config.name,
            self.state,
            self.policy,
            self._loop.time(),
            trainer_pid=trainer.pid if trainer is not None and trainer.exited_at is None else None,
            started_at=self._started_at,
            uptime_s=round(time.monotonic() - self._started_mono, 3),
            restarts_by_cause=self.ledger.causes(),
        )

    def _execute(self, action: core.Action, now: float) -> None:
        match action:
            case core.Prepare():
                self._start_prepare(action.attempt, action.below_step, final=action.final)
            case core.Launch():
                self._launch(action.attempt, action.remedies)
            case core.Reclaim():
                self._start_reclaim(action.attempt)
            case core.StopTrainer():
                if self.trainer is not None:
                    self.trainer.stop(signal.Signals[action.signal], action.grace_s)
            case core.KillTrainer():
                self._kill_now()
            case core.KillLeftovers():
                self.preflight.kill_leftovers(self._last_marker)
            case core.StartTimer():
                self._start_timer(action, now)
            case core.RecordAttemptEnd():
                self.ledger.end_attempt(
                    action.attempt, time.time(), action.cause, action.status, action.stable, action.detail
                )
                self.reporter.attempt_ended(action)
            case core.Note():
                self.reporter.report(
                    action.kind, action.level, action.message, attempt=action.attempt, commit=False
                )

    def _start_timer(self, action: core.StartTimer, now: float) -> None:
        assert self._loop is not None
        event = core.TimerFired(action.timer, action.attempt)
        self._timers = [t for t in self._timers if not t.cancelled() and t.when() > now]
        self._timers.append(self._loop.call_later(action.delay_s, self._queue.put_nowait, event))

    def _kill_now(self) -> None:
        if self.trainer is not None:
            self.trainer.kill()
        if self._reclaim_kill is not None:
            self._reclaim_kill()

    def _start_prepare(self, attempt: int, below_step: int | None, *, final: bool = False) -> None:
        self._spawn_task(self._prepare(attempt, below_step, final=final))

    async def _prepare(self, attempt: int, below_step: int | None, *, final: bool = False) -> None:
        """The run directory (the resume plan), then the checks before a launch (none
        for the `final` settling of a finished run)."""
        prepared: core.Prepared | core.PrepareFailed = core.Prepared(attempt)
        if self.guard is not None:
            prepared = await self.guard.prepare(attempt, below_step, final=final)
        if isinstance(prepared, core.Prepared) and not final:
            await self._check_disk()
            try:
                prepared = await self.preflight.check(prepared, self._last_marker)
            except Exception:  # drift and GPU checks are advice: never a reason to stall
                log.exception("error in the checks before a launch; launching anyway")
        self._queue.put_nowait(prepared)

    def _save(self, now: float) -> None:
        """Keep the state in the ledger. Signs of progress (many a second) change only the
        detectors' view, written at most every PROGRESS_SAVE_S (the rest must survive a crash)."""
        state = self.state
        durable = replace(state, watch=Watch(), carry=replace(state.carry, longest_gap_s=None))
        if durable == self._saved and now - self._saved_at < PROGRESS_SAVE_S:
            return
        self._saved, self._saved_at = durable, now
        last = state.watch.last_progress_at
        relaunch_at = time.time() + (state.relaunch_at - now) if state.relaunch_at is not None else None
        self.ledger.save_state(
            self.config.name,
            self.config.path,
            state,
            relaunch_at=relaunch_at,
            next_delay_s=core.next_delay_s(state, self.policy),
            supervisor_pid=os.getpid(),
            now=time.time(),
            last_progress_at=time.time() - (now - last) if last is not None else None,
        )
        self.ledger.commit()

    async def _stop_trainer_on_error(self) -> None:
        """The supervisor is failing: never leave its trainer running unsupervised."""
        if not self._tasks:
            return  # no trainer or reclaim under way: nothing can be left running
        log.error("internal error: stopping the trainer before exiting")
        if self.trainer is not None:
            self.trainer.stop(signal.Signals[self.config.stop.signal], self.config.stop.grace_s)
        # Watch and reclaim tasks finish once their session is empty (SIGKILL after grace).
        await asyncio.wait(self._tasks, timeout=self.config.stop.grace_s + 30)

    # --- launching --------------------------------------------------------------------

    def _launch(self, attempt: int, remedies: Sequence[Remedy]) -> None:
        marker = f"{self.config.name}:{attempt}:{secrets.token_hex(4)}"
        self.ledger.begin_attempt(attempt, time.time(), marker)
        if not self.ledger.commit():  # durable before the trainer exists, or no trainer
            why = "cannot record the attempt in the ledger (the state disk is full or failing)"
            self._queue.put_nowait(core.LaunchFailed(attempt, why))
            return
        self._last_marker = marker
        self.tail.lines.clear()
        self.sink.forget_partial_lines()
        self.sink.write_log(f"\n=== train-supervisor: attempt {attempt} ===\n".encode())
        command, env = launch_command(
            self.config, self.layout, self.vitals.env(), remedies, marker, self.withheld_env
        )
        self._oom_evidence = OomEvidence(self.oom)
        try:
            trainer = Trainer.spawn(command, self.config.cwd, env, marker, self.sink)
        except OSError as exc:
            self.trainer = None
            self._queue.put_nowait(core.LaunchFailed(attempt, f"{type(exc).__name__}: {exc}"))
            return
        self.trainer = trainer
        self._spawn_task(self._watch(attempt, trainer))  # first: a failing write below must not orphan it
        self._queue.put_nowait(core.Launched(attempt, trainer.pid))
        self.ledger.set_attempt_process(attempt, trainer.pid, trainer.identity)
        self.preflight.launched(attempt)

    def _spawn_task(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch(self, attempt: int, trainer: Trainer) -> None:
        stop = signal.Signals[self.config.stop.signal]
        ended = await watch_exit(
            attempt, trainer, stop, self.config.stop.grace_s, self.tail, self._oom_evidence
        )
        self._queue.put_nowait(ended)

    # --- boot -------------------------------------------------------------------------

    def _restore(self) -> tuple[core.State, core.Boot]:
        """The core's state from the ledger, and whether an attempt was left unfinished."""
        self._unfinished = self.ledger.unfinished_attempt()
        state, boot = restored(
            self.ledger.run(),
            self._unfinished,
            seed=random.getrandbits(32),
            reset_counters=self.reset_counters,
            again=self.again,
        )
        if self._unfinished is not None:
            self._last_marker = self._unfinished.marker  # its processes must leave the GPU too
        return state, boot

    def _start_reclaim(self, n: int) -> None:
        attempt = self._unfinished
        assert attempt is not None
        assert attempt.n == n
        leftovers = Leftovers.of(attempt)
        if leftovers is None:
            self._queue.put_nowait(core.Reclaimed(n))  # nothing survives a reboot
            return
        self._reclaim_kill = leftovers.kill_now
        self._spawn_task(self._reclaim(attempt, leftovers))

    async def _reclaim(self, attempt: AttemptRow, leftovers: Leftovers) -> None:
        """Stop what is left of an attempt a previous supervisor lost track of."""
        try:
            found = await leftovers.clear(signal.Signals[self.config.stop.signal], self.config.stop.grace_s)
        finally:
            self._reclaim_kill = None
        self._queue.put_nowait(core.Reclaimed(attempt.n))
        if found:
            self.reporter.report(
                "reclaimed",
                "warning",
                f"stopped {found} process(es) of attempt {attempt.n} left running by a previous supervisor",
                attempt=attempt.n,
            )
