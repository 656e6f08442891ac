"""`python -m supervisor.cli`: the same command as `train-supervisor` (the units' ExecStart)."""

from supervisor.cli import main

main()
