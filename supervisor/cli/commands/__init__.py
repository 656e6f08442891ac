"""The click commands, one module per command group. Each imports only click at its top
(so that `--help` stays fast) and what its work needs when it runs; the work itself lives
beside this package (`supervisor.cli.status`, `.checkpoint_commands`, `.init`, `.service`)."""

from __future__ import annotations

import click

from supervisor.cli.commands import checkpoints, config, demo, init, run, service, status

COMMANDS: tuple[click.Command, ...] = (
    run.run,
    status.status,
    checkpoints.verify,
    checkpoints.checkpoints,
    checkpoints.plan,
    config.config_group,
    init.init,
    service.install_service,
    demo.demo,
)
