"""The `train-supervisor` command: the click group `main`, with the commands of
`supervisor.cli.commands` (one module per command group).

Exit codes: 0 training completed, or stopped on request; 1 internal error;
2 usage or config error (nothing was started); 3 gave up (too many attempts
without progress; the systemd unit names it in RestartPreventExitStatus=).
"""

from __future__ import annotations

import click

from supervisor import __version__
from supervisor.cli.commands import COMMANDS

# Every command imports what it needs when it runs: `--help` loads click and the command modules.


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="train-supervisor")
def main() -> None:
    """Keep a training run going unattended.

    Launches the trainer, notices when it dies, relaunches it with exponential
    backoff, gives up (exit 3) after too many attempts without progress, and keeps
    a ledger of everything in the run's state_dir.
    """


for _command in COMMANDS:
    main.add_command(_command)
