"""The run's checkpoint book as the config sets it up: one construction for the daemon and for `plan`, so both judge alike."""

from __future__ import annotations

import trainer_adapters
from supervisor.checkpoints.verdicts import CheckpointBook
from supervisor.config import Config
from supervisor.ledger import Ledger
from supervisor.outputs.reporter import Report
from supervisor.validator.client import ValidatorClient
from trainer_adapters.base import Layout


def book_for(
    config: Config,
    layout: Layout,
    ledger: Ledger | None,
    report: Report,
    *,
    record: bool = True,
    accept_model_change: bool = False,
) -> CheckpointBook:
    """The run's checkpoint book, with its own validator, as the config sets it up: one
    construction for the daemon and for `plan`, so both judge alike."""
    assert config.adapter.checkpoint_dir is not None
    c = config.checkpoints
    validator = ValidatorClient(
        job_timeout_s=c.validation_timeout_s, memory_limit_mb=c.validator_memory_mb or None
    )
    return CheckpointBook(
        layout=layout,
        directories=[config.adapter.checkpoint_dir],
        state_dir=config.state_dir,
        ledger=ledger,
        validator=validator,
        keep_verified=c.keep_verified,
        record=record,
        unit=trainer_adapters.get(config.adapter.name).position_unit,
        reserve_bytes=int(c.state_reserve_mb * 1024 * 1024),
        report=report,
        accept_model_change=accept_model_change,
    )
