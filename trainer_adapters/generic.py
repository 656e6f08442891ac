"""`generic`: any PyTorch training loop. Every option is optional."""

from __future__ import annotations

from trainer_adapters.base import AdapterOptions, TrainerAdapter


class GenericOptions(AdapterOptions):
    # A file-name pattern with a `{step}` placeholder, e.g. "ckpt_{step}.pt".
    pattern: str | None = None
    # Keys every checkpoint dict must contain, e.g. ["model", "optimizer"].
    required_keys: tuple[str, ...] = ()
    # The dict key holding the global step, if the checkpoint records one.
    step_key: str | None = None


ADAPTER = TrainerAdapter(
    name="generic",
    summary="any PyTorch loop: supervises the process; checkpoints from an optional pattern",
    options=GenericOptions,
)
