"""Whether the trainer's own `torch.load` can load the state it is to resume from: a
checkpoint holding globals beyond torch's safe ones (GPT-SoVITS s1 on Lightning >= 2.6:
`pathlib.PosixPath`) fails a weights-only load, unless the opt-in shim
(`trainer_safe_globals`) is in the trainer's process."""

from __future__ import annotations

import os
from collections.abc import Sequence

import trainer_adapters
from supervisor.checkpoints.on_disk import validated_globals
from supervisor.checkpoints.refusals import globals_refusal
from supervisor.config import Config
from supervisor.process.interpreter import shim_env, shim_in, trainer_python, versions
from trainer_adapters.base import Layout


class LoadCheck:
    """`launches`: the supervisor launches the trainer itself, with the shim where the
    config asks for it; else whoever starts the trainer must give it that environment."""

    def __init__(self, config: Config, layout: Layout, *, launches: bool) -> None:
        self.config = config
        self.layout = layout
        self.launches = launches
        self._versions: dict[str, str | None] | None = None  # the trainer's packages, once asked

    def refusal(self, needs: Sequence[str]) -> str | None:
        """Why the trainer could not load a state holding the globals `needs`."""
        if not needs:
            return None
        if self.config.checkpoints.trainer_safe_globals:
            return None if self.launches else self._shim_missing(needs)
        adapter = trainer_adapters.get(self.config.adapter.name)
        if adapter.weights_only_load is None:
            return None
        installed = self._versions_of_trainer()
        found = adapter.weights_only_load(installed) if installed else None
        return globals_refusal(needs, found, installed)

    def _versions_of_trainer(self) -> dict[str, str | None]:
        if self._versions is None:
            env = {**os.environ, **self.config.run.env}
            python = trainer_python(self.config.run.command, self.config.cwd, env)
            self._versions = (versions(python, self.config.cwd, env) if python else None) or {}
        return self._versions

    def _shim_missing(self, needs: Sequence[str]) -> str | None:
        """Prepared for a trainer started by another tool (a SLURM prolog, by hand): the
        shim reaches it only through the environment of the shell running this, which
        that trainer is taken to share."""
        if shim_in(os.environ, needs):
            return None
        allowed = validated_globals(self.layout)
        exports = " ".join(f"{key}={value}" for key, value in shim_env(allowed, "").items())
        return (
            f"the state to resume from holds {', '.join(needs)}, which the trainer's weights-only torch.load "
            "allows only with the supervisor's shim (trainer_safe_globals), and only `train-supervisor run` "
            f"gives it that: start the trainer (and this plan) with `export {exports}` (PYTHONPATH prepended to "
            "yours), or let `train-supervisor run` launch it"
        )
