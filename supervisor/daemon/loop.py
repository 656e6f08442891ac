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
from supervisor.checkpoints.on_disk import validated_globals
from supervisor.checkpoints.pipeline import CheckpointGuard
from supervisor.config import Config, RemedySection, nan_tolerance
from supervisor.core import (
    Action,
    Boot,
    Event,
    Exited,
    ExitStatus,
    Finish,
    KillLeftovers,
    KillTrainer,
    Launch,
    Launched,
    LaunchFailed,
    Note,
    Policy,
    Prepare,
    Prepared,
    PrepareFailed,
    Reclaim,
    Reclaimed,
    RecordAttemptEnd,
    StartTimer,
    State,
    StopRequested,
    StopTrainer,
    TimerFired,
)
from supervisor.core.backoff import Backoff
from supervisor.core.health import Remedy, Watch, with_remedies
from supervisor.daemon.housekeeping import DaemonChores, Every, Housekeeping
from supervisor.daemon.preflight import Preflight
from supervisor.ledger import AttemptRow, Ledger
from supervisor.ledger.text import Redactor
from supervisor.outputs import logs
from supervisor.outputs.prometheus import MetricsServer, exposition
from supervisor.outputs.reporter import Reporter
from supervisor.outputs.status_socket import LiveStatusServer, Snapshot
from supervisor.outputs.systemd import Notifier
from supervisor.outputs.webhooks import Notifications, Webhook, secret_values, url_from
from supervisor.process import gpu
from supervisor.process.interpreter import shim_env
from supervisor.process.sessions import (
    boot_id,
    clear_session,
    marked_processes,
    proc_identity,
    signal_session,
    split_identity,
)
from supervisor.process.trainer import OutputTail, Trainer, trainer_env
from supervisor.process.trainer_log import OutputSink, RotatingLog
from supervisor.signals.crash_detail import crash_detail
from supervisor.signals.oom_evidence import OomCounter, OomEvidence
from supervisor.signals.output_reader import PROGRESSING, OutputReader
from supervisor.signals.progress_sources import Vitals

log = structlog.get_logger("supervisor")


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
PROGRESS_SAVE_S = 5.0


def policy_for(config: Config) -> Policy:
    restart, heartbeat = config.restart, config.heartbeat
    adapter = trainer_adapters.get(config.adapter.name)
    reads_progress = adapter.metrics is not None or any(r.said in PROGRESSING for r in adapter.lines)
    return Policy(
        backoff=Backoff(
            initial_s=restart.backoff_initial_s,
            max_s=restart.backoff_max_s,
            factor=restart.backoff_factor,
            jitter=restart.jitter,
        ),
        stable_after_s=restart.stable_after_s,
        max_attempts_without_progress=restart.max_attempts_without_progress,
        stop_signal=config.stop.signal,
        stop_grace_s=config.stop.grace_s,
        exit_codes_trusted=adapter.exit_codes_trusted,
        progress_from_checkpoints=config.adapter.checkpoint_dir is not None and not adapter.steps_restart,
        hang_timeout_s=None if heartbeat.mode == "off" else heartbeat.timeout_s,
        startup_timeout_s=heartbeat.effective_startup_timeout_s,
        watch_from_launch=heartbeat.mode == "on" or reads_progress,
        learn_factor=heartbeat.learn_factor,
        learn_min_s=heartbeat.learn_min_s,
        nan_tolerance=nan_tolerance(config),
        max_nan_rollbacks=config.nan.max_rollbacks,
        nan_remedy=config.nan.remedy.remedy("nan remedy") if config.nan.remedy is not None else None,
        positions_comparable=not adapter.steps_restart,
        reset_epoch_offset=adapter.first_epoch_after_resume,
        unit=adapter.position_unit,
        oom_cuda_remedies=_ladder(config.oom.cuda_remedies, "oom-cuda"),
        oom_host_remedies=_ladder(config.oom.host_remedies, "oom-host"),
        checkpoint_dir=str(config.adapter.checkpoint_dir or ""),
        save_landing_grace_s=config.checkpoints.save_landing_grace_s,
    )


def secret_env_names(config: Config) -> list[str]:
    """The environment variables that hold the supervisor's own secrets."""
    return [name for hook in config.notify.webhooks for name in (hook.url_env, hook.token_env) if name]


def webhooks_from(config: Config) -> list[Webhook]:
    hooks = []
    for section in config.notify.webhooks:
        url = url_from(section.url, section.url_env, os.environ)
        if url is None:
            continue  # (config check names the unset variable)
        token = os.environ.get(section.token_env) if section.token_env else None
        events = frozenset(section.events)
        hooks.append(Webhook(url, section.format, events, section.min_interval_s, section.timeout_s, token))
    return hooks


def _ladder(rungs: Sequence[RemedySection], kind: str) -> tuple[Remedy, ...]:
    return tuple(rung.remedy(f"{kind} remedy {n}") for n, rung in enumerate(rungs, 1))


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
        self.state = State()
        self.trainer: Trainer | None = None
        self.tail = OutputTail()
        self.trainer_log = RotatingLog(config.trainer_log, config.logs.max_bytes, config.logs.backups)
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
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
        self.notifier = Notifier()
        hooks = webhooks_from(config)
        # Read once; then gone from our environment, so that no child (trainer, validator)
        # inherits them, and withheld from the trainer's (unless [run] env names them).
        self.withheld_env = secret_env_names(config)
        for name in self.withheld_env:
            os.environ.pop(name, None)
        self.webhooks = Notifications(hooks)
        self.secrets = Redactor(secret_values(hooks))
        ledger.redact = self.secrets
        logs.redact_secrets(self.secrets)
        logs.follow_attempt(lambda: self.state.attempt)
        self.reporter = Reporter(
            ledger, attempt=lambda: self.state.attempt, run_name=config.name, webhooks=self.webhooks
        )
        self._notified: tuple[object, ...] | None = None  # what systemd was last told
        self._saved: State | None = None  # what the ledger holds (less the detectors' view)
        self._saved_at = -math.inf
        self._started_at, self._started_mono = time.time(), time.monotonic()
        self.live = LiveStatusServer(config.state_dir, self.snapshot)
        self.chores = self._chores()
        self.housekeeping = Housekeeping(self.chores.chores())
        self.exporter: MetricsServer | None = None
        if config.metrics.port:
            self.exporter = MetricsServer(config.metrics.bind, config.metrics.port, self._metrics_text)

    # --- main loop ------------------------------------------------------------------

    async def run(self) -> int:
        loop = self._loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(
                sig, self._queue.put_nowait, StopRequested(f"{signal.Signals(sig).name} received")
            )
        try:
            self.state, boot = self._restore()
            await self.vitals.start()
            await self._start_servers()
            await self._check_disk()
            self.housekeeping.start()
            if self._unfinished is None:
                # What is on the GPU now is not ours. After a reclaim it may be: the wait
                # before the first launch then looks at every pid that leaves /proc.
                await self.preflight.start()
            if self.guard is not None:
                await self.guard.start()
            self.notifier.ready(self._status_line())
            self._keep_watchdog_fed()
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
            await self._stop_servers()
            if self.guard is not None:
                await self.guard.stop()
            await self.vitals.stop()
            await self.webhooks.drain()
            self.trainer_log.close()
            self.notifier.close()

    def _step(self, event: Event) -> int | None:
        assert self._loop is not None
        now = self._loop.time()
        self.state, actions = core.decide(self.state, event, now, self.policy)
        exit_code = None
        for action in actions:
            if isinstance(action, Finish):
                exit_code = action.exit_code
            else:
                self._execute(action, now)
        self._save(now)
        self._notify()
        return exit_code

    # --- housekeeping -----------------------------------------------------------------

    def _chores(self) -> DaemonChores:
        every = self.config.housekeeping
        guard = self.guard
        return DaemonChores(
            every=Every(
                rescan_s=self.config.checkpoints.rescan_s,
                retention_s=every.retention_s,
                disk_check_s=every.disk_check_s,
                status_s=every.status_every_s,
            ),
            checkpoint_dir=self.config.adapter.checkpoint_dir,
            state_dir=self.config.state_dir,
            min_free_gb=self.config.checkpoints.min_free_gb,
            checkpoint_gb=self._checkpoint_gb,
            report=self._report,
            status=lambda: asdict(self.snapshot()),
            rescan=guard.rescan if guard is not None else None,
            retain=guard.retain if guard is not None else None,
        )

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

    # --- live status and metrics ----------------------------------------------------

    async def _start_servers(self) -> None:
        await self.live.start()
        if self.exporter is not None:
            await self.exporter.start()

    async def _stop_servers(self) -> None:
        await self.live.stop()
        if self.exporter is not None:
            await self.exporter.stop()

    def snapshot(self) -> Snapshot:
        """What `status` shows while the supervisor runs (exact ages, from the loop's clock)."""
        assert self._loop is not None
        now, state = self._loop.time(), self.state
        last = state.watch.last_progress_at
        trainer = self.trainer
        return Snapshot(
            run=self.config.name,
            phase=state.phase.value,
            attempt=state.attempt,
            supervisor_pid=os.getpid(),
            started_at=self._started_at,
            uptime_s=round(time.monotonic() - self._started_mono, 3),
            trainer_pid=trainer.pid if trainer is not None and trainer.exited_at is None else None,
            last_progress_age_s=round(now - last, 3) if last is not None else None,
            last_progress_sign=state.watch.last_sign or None,
            best_step=state.best_step,
            next_relaunch_in_s=max(0.0, state.relaunch_at - now) if state.relaunch_at is not None else None,
            next_backoff_s=core.next_delay_s(state, self.policy),
            attempts_without_progress=state.without_progress,
            last_cause=state.last_cause.value if state.last_cause is not None else None,
            restarts_by_cause=self.ledger.causes(),
        )

    def _metrics_text(self) -> str:
        return exposition(self.snapshot(), self.ledger.validation_times())

    # --- systemd ----------------------------------------------------------------------

    def _status_line(self) -> str:
        state = self.state
        verified = (
            f"last verified step {state.best_step}" if state.best_step is not None else "nothing verified yet"
        )
        cause = f", last end: {state.last_cause.value}" if state.last_cause is not None else ""
        return f"{state.phase.value}: attempt {state.attempt}, {verified}{cause}"

    def _notify(self) -> None:
        """STATUS= when what it says changes; STOPPING=1 once the supervisor winds down."""
        state = self.state
        shown = (state.phase, state.attempt, state.best_step, state.last_cause)
        if shown == self._notified:
            return
        self._notified = shown
        if state.phase is core.Phase.STOPPING or state.phase.final:
            self.notifier.stopping(self._status_line())
        else:
            self.notifier.status(self._status_line())

    def _keep_watchdog_fed(self) -> None:
        """WATCHDOG=1 at half systemd's interval, from the event loop itself: a loop that
        is stuck stops feeding it, and systemd restarts the supervisor."""
        interval = self.notifier.watchdog_s
        if interval is None or self._loop is None:
            return
        self.notifier.watchdog()
        self._timers.append(self._loop.call_later(interval / 2, self._keep_watchdog_fed))

    def _execute(self, action: Action, now: float) -> None:
        match action:
            case Prepare():
                self._start_prepare(action.attempt, action.below_step, final=action.final)
            case Launch():
                self._launch(action.attempt, action.remedies)
            case Reclaim():
                self._start_reclaim(action.attempt)
            case StopTrainer():
                if self.trainer is not None:
                    self.trainer.stop(signal.Signals[action.signal], action.grace_s)
            case KillTrainer():
                self._kill_now()
            case KillLeftovers():
                self.preflight.kill_leftovers(self._last_marker)
            case StartTimer():
                self._start_timer(action, now)
            case RecordAttemptEnd():
                self.ledger.end_attempt(
                    action.attempt, time.time(), action.cause, action.status, action.stable, action.detail
                )
                self.reporter.attempt_ended(action)
            case Note():
                self.reporter.report(
                    action.kind, action.level, action.message, attempt=action.attempt, commit=False
                )

    def _start_timer(self, action: StartTimer, now: float) -> None:
        assert self._loop is not None
        event = TimerFired(action.timer, action.attempt)
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
        prepared: Prepared | PrepareFailed = Prepared(attempt)
        if self.guard is not None:
            prepared = await self.guard.prepare(attempt, below_step, final=final)
        if isinstance(prepared, Prepared) and not final:
            await self._check_disk()
            try:
                prepared = await self.preflight.check(prepared, self._last_marker)
            except Exception:  # drift and GPU checks are advice: never a reason to stall
                log.exception("error in the checks before a launch; launching anyway")
        self._queue.put_nowait(prepared)

    def _save(self, now: float) -> None:
        """Keep the state in the ledger. Signs of progress arrive many times a second:
        they change only the detectors' view, which is written at most every
        PROGRESS_SAVE_S (what must survive a crash is in the rest of the state)."""
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
            self._queue.put_nowait(LaunchFailed(attempt, why))
            return
        self._last_marker = marker
        self.tail.lines.clear()
        self.sink.forget_partial_lines()
        self.sink.write_log(f"\n=== train-supervisor: attempt {attempt} ===\n".encode())
        command, overrides = with_remedies(
            self.config.run.command,
            {**self.config.run.env, **self.vitals.env(), **self._shim_env()},
            remedies,
        )
        env = trainer_env(os.environ, overrides, marker, withheld=self.withheld_env)
        self._oom_evidence = OomEvidence(self.oom)
        try:
            trainer = Trainer.spawn(command, self.config.cwd, env, marker, self.sink)
        except OSError as exc:
            self.trainer = None
            self._queue.put_nowait(LaunchFailed(attempt, f"{type(exc).__name__}: {exc}"))
            return
        self.trainer = trainer
        self._spawn_task(self._watch(attempt, trainer))  # first: a failing write below must not orphan it
        self._queue.put_nowait(Launched(attempt, trainer.pid))
        self.ledger.set_attempt_process(attempt, trainer.pid, trainer.identity)
        self.preflight.launched(attempt)

    def _shim_env(self) -> dict[str, str]:
        """[checkpoints] trainer_safe_globals: the sitecustomize that allows, in the
        trainer's process, exactly the globals its checkpoints were verified with."""
        allowed = validated_globals(self.layout)
        if not self.config.checkpoints.trainer_safe_globals or not allowed:
            return {}
        return shim_env(allowed, self.config.run.env.get("PYTHONPATH", os.environ.get("PYTHONPATH", "")))

    def _spawn_task(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch(self, attempt: int, trainer: Trainer) -> None:
        stop_signal = signal.Signals[self.config.stop.signal]
        try:
            status = await trainer.wait(stop_signal, self.config.stop.grace_s)
        except Exception as exc:  # the exit must reach the core, or supervision stalls
            log.exception("error while waiting for the trainer to end; killing it")
            trainer.kill()
            returncode = await asyncio.to_thread(trainer.popen.wait)  # never block the loop
            status, detail = ExitStatus.from_returncode(returncode), f"supervisor error: {exc}"
        else:
            detail = crash_detail(self.tail.lines)
        ended = Exited(
            attempt,
            status,
            detail,
            at=trainer.exited_at,
            before_stop=trainer.exited_before_stop,
            oom_killed=await asyncio.to_thread(self._oom_killed, status, trainer),
        )
        self._queue.put_nowait(ended)

    def _oom_killed(self, status: ExitStatus, trainer: Trainer) -> bool:
        """The kernel's OOM killer took a process of this attempt (its cgroup's count rose,
        or the kernel log names the trainer). Blocking reads: run in a thread."""
        if status.code == 0 or self._oom_evidence is None:
            return False
        try:
            return self._oom_evidence.report([trainer.pid]).oom_killed
        except Exception:  # evidence only: the exit must reach the core whatever happens
            log.exception("could not read the OOM evidence")
            return False

    # --- boot -------------------------------------------------------------------------

    def _restore(self) -> tuple[State, Boot]:
        """The core's state from the ledger, and whether an attempt was left unfinished."""
        saved = self.ledger.run()
        state = State(seed=random.getrandbits(32))
        if saved is not None:
            state = replace(
                state,
                attempt=saved.attempt,
                backoff_level=saved.backoff_level,
                without_progress=saved.without_progress,
                last_cause=saved.last_cause,
                last_exit=saved.last_exit,
                best_step=saved.best_step,
                carry=saved.carry,
            )
            if self.reset_counters:
                # (the OOM ladders stay: what ran out of memory will again)
                carry = replace(state.carry, nan_rollbacks=0, silent_resets=0)
                state = replace(state, backoff_level=0, without_progress=0, carry=carry)
            elif saved.without_progress:
                log.info(
                    "counters carried over from the previous supervisor",
                    attempts_without_progress=saved.without_progress,
                    previous_state=saved.phase.value,
                )
        self._unfinished = self.ledger.unfinished_attempt()
        if self._unfinished is None:
            ended = saved.phase if saved is not None and not self.again else None
            return state, Boot(
                completed=ended is core.Phase.COMPLETED, finishing=ended is core.Phase.FINISHING
            )
        self._last_marker = self._unfinished.marker  # its processes must leave the GPU too
        if self._unfinished.n != state.attempt:  # the ledger died between two writes
            state = replace(state, attempt=self._unfinished.n)
        made_progress = saved is not None and (saved.stable or saved.progressed)
        return state, Boot(unfinished=True, unfinished_stable=made_progress)

    def _start_reclaim(self, n: int) -> None:
        attempt = self._unfinished
        assert attempt is not None
        assert attempt.n == n
        since = 0  # without a recorded identity, every process is a candidate
        if attempt.identity is not None:
            booted, _, since = split_identity(attempt.identity)
            if booted != boot_id():
                self._queue.put_nowait(Reclaimed(n))  # nothing survives a reboot
                return
        leader_alive = attempt.pid is not None and proc_identity(attempt.pid) == attempt.identity
        sid = attempt.pid if leader_alive else None

        def marked() -> list[int]:
            return marked_processes(attempt.marker, since)

        self._reclaim_kill = lambda: signal_session(sid, signal.SIGKILL, marked())
        self._spawn_task(self._reclaim(attempt, sid, marked))

    async def _reclaim(self, attempt: AttemptRow, sid: int | None, marked: Callable[[], list[int]]) -> None:
        """Stop what is left of an attempt a previous supervisor lost track of."""
        stop_signal = signal.Signals[self.config.stop.signal]
        try:
            found = await clear_session(sid, stop_signal, self.config.stop.grace_s, marked)
        finally:
            self._reclaim_kill = None
        self._queue.put_nowait(Reclaimed(attempt.n))
        if found:
            self.reporter.report(
                "reclaimed",
                "warning",
                f"stopped {found} process(es) of attempt {attempt.n} left running by a previous supervisor",
                attempt=attempt.n,
            )
