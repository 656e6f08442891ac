"""Everything the daemon tells the world, wired from the config: the one reporter (log, ledger, webhooks), systemd, the status socket and the metrics exporter; and the secrets kept out of all of them and out of every child's environment."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

from supervisor.config import Config
from supervisor.core import Phase, State
from supervisor.daemon.from_config import secret_env_names, webhooks_from
from supervisor.daemon.status_view import status_line
from supervisor.ledger import Ledger
from supervisor.ledger.text import Redactor
from supervisor.outputs import logs
from supervisor.outputs.prometheus import MetricsServer, exposition
from supervisor.outputs.reporter import Reporter
from supervisor.outputs.status_socket import LiveStatusServer, Snapshot
from supervisor.outputs.systemd import Notifier
from supervisor.outputs.webhooks import Notifications, secret_values

# At the end of a run, the messages under way get this long (within the outputs' stop
# bound, EDGE_STOP_TIMEOUT_S); a post still going on after it has the exit's grace.
WEBHOOK_DRAIN_S = 8.0


class Telling:
    def __init__(
        self, config: Config, ledger: Ledger, attempt: Callable[[], int], snapshot: Callable[[], Snapshot]
    ) -> None:
        hooks = webhooks_from(config)
        # Read once; then gone from our environment, so that no child (trainer, validator)
        # inherits them, and withheld from the trainer's (unless [run] env names them).
        self.withheld_env = secret_env_names(config)
        for name in self.withheld_env:
            os.environ.pop(name, None)
        self.webhooks = Notifications(hooks)
        secrets = Redactor(secret_values(hooks))
        ledger.redact = secrets
        logs.redact_secrets(secrets)
        logs.follow_attempt(attempt)
        self.reporter = Reporter(ledger, attempt=attempt, run_name=config.name, webhooks=self.webhooks)
        self.notifier = Notifier()
        self._notified: tuple[object, ...] | None = None  # what systemd was last told
        self._snapshot = snapshot
        self._ledger = ledger
        self.live = LiveStatusServer(config.state_dir, snapshot)
        self.exporter: MetricsServer | None = None
        if config.metrics.port:
            self.exporter = MetricsServer(config.metrics.bind, config.metrics.port, self._metrics_text)
        self._watchdog: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        await self.live.start()
        if self.exporter is not None:
            await self.exporter.start()

    def ready(self, state: State) -> None:
        """READY=1, once everything that can refuse the start (another supervisor watching
        the checkpoint directory) has let it through; then the watchdog is fed."""
        self.notifier.ready(status_line(state))
        self._keep_watchdog_fed()

    async def stop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        await self.live.stop()
        if self.exporter is not None:
            await self.exporter.stop()
        await self.webhooks.drain(WEBHOOK_DRAIN_S)
        self.notifier.close()

    def notify(self, state: State) -> None:
        """STATUS= when what it says changes; STOPPING=1 once the supervisor winds down."""
        shown = (state.phase, state.attempt, state.best_step, state.last_cause)
        if shown == self._notified:
            return
        self._notified = shown
        if state.phase is Phase.STOPPING or state.phase.final:
            self.notifier.stopping(status_line(state))
        else:
            self.notifier.status(status_line(state))

    def _keep_watchdog_fed(self) -> None:
        """WATCHDOG=1 at half systemd's interval, from the event loop itself: a loop that
        is stuck stops feeding it, and systemd restarts the supervisor."""
        interval = self.notifier.watchdog_s
        if interval is None:
            return
        self.notifier.watchdog()
        self._watchdog = asyncio.get_running_loop().call_later(interval / 2, self._keep_watchdog_fed)

    def _metrics_text(self) -> str:
        return exposition(self._snapshot(), self._ledger.validation_times())
