"""The checkpoint layout VITS passed on to GPT-SoVITS s2 and Applio (RVC).

`G_<n>.pth` and `D_<n>.pth` in one directory. On resume the trainer globs `G_*.pth` and
`D_*.pth` separately and takes, for each, the file whose *full path* has the largest
`int(all its digits)` — so the two may come from different saves, a sentinel number
(233333333333, 2333333) outranks every real step, and a matching name without digits in
a digit-less directory makes `int("")` raise (which these trainers swallow: a silent
fresh start). This module models exactly that; the adapters add their keys and facts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from trainer_adapters.base import Expectations, LineRule, NamedCheckpoint, Said
from trainer_adapters.rules import all_digits, compiled, ignored_by, max_by

# What `glob("G_*.pth")` matches: any name with that prefix and suffix.
GLOB = r"(?P<role>[GD])_(?P<rest>.*)\.pth"
DIGITLESS = "a matching name and a directory path without any digit: int('') raises"

# VITS's utils.save_checkpoint keys, kept by GPT-SoVITS s2 (`iteration` is the epoch).
KEYS = ("model", "iteration", "optimizer", "learning_rate")
# What Applio's preprocessing and extraction leave next to its checkpoints (a VITS
# logs/<model> has none of them).
APPLIO_MARKERS = ("sliced_audios", "filelist.txt", "model_info.json", "extracted")

# The log lines VITS's train.py and utils.py print, kept by GPT-SoVITS s2: on stdout as
# `INFO:<model>:<message>`, tab separated in train.log.
FLOAT = r"-?(?:nan|inf|\d+(?:\.\d*)?(?:e[-+]?\d+)?)"  # a Python float's repr
MSG = r"(?:^|[:\t])"
TRAIN_EPOCH = LineRule(Said.PROGRESS, MSG + r"Train Epoch: (?P<epoch>\d+) \[\d+%\]$")
LOADED = LineRule(Said.LOADED, MSG + r"Loaded checkpoint '(?P<path>.+)' \(iteration (?P<epoch>\d+)\)$")
SAVING = LineRule(Said.PROGRESS, MSG + r"Saving model and optimizer state at iteration (?P<epoch>\d+) to ")
EPOCH_END = LineRule(Said.PROGRESS, MSG + r"====> Epoch: (?P<epoch>\d+)$")
DISK_FULL = r"PytorchStreamWriter failed writing file .*file write failed"


@dataclass(frozen=True)
class GlobLayout:
    roles: tuple[str, ...]  # ("G", "D"), or ("G",) where there is no discriminator
    required_keys: tuple[str, ...]
    sentinel: int | None = None  # the fixed "save latest" number, rewritten in place
    # The trainer counts progress in epochs (content `iteration`) and its file numbers
    # are either a sentinel or a global step it recomputes on resume: order by epoch.
    steps_from_epochs: bool = False
    not_resume_points: tuple[tuple[str, str], ...] = ()  # (name regex, what it is)
    recursive: bool = False

    def parse(self, path: Path) -> NamedCheckpoint | None:
        m = compiled(GLOB).fullmatch(path.name)
        # Not even an export is left out when it matches the glob: the trainer would load it.
        if m is None or m["role"] not in self.roles:
            return None
        rest = m["rest"]
        number = int(rest) if rest.isdigit() and rest.isascii() else None
        if number is not None and number == self.sentinel:
            return NamedCheckpoint(path, m["role"], None, in_place=True)
        if self.steps_from_epochs:
            return NamedCheckpoint(path, m["role"], None, content_step=True)
        return NamedCheckpoint(path, m["role"], number)

    def ignored(self, path: Path) -> str | None:
        return ignored_by(self.not_resume_points, path)

    def expect(self, ckpt: NamedCheckpoint) -> Expectations:
        # `iteration` holds the epoch (despite its name), for G and D alike.
        step_key = "iteration" if self.steps_from_epochs or ckpt.in_place else None
        return Expectations(self.required_keys, step_key=step_key, epoch_key="iteration")

    def pick(self, files: Sequence[NamedCheckpoint]) -> dict[str, NamedCheckpoint]:
        picked = {}
        for role in self.roles:
            chosen = max_by(
                [f for f in files if f.role == role], lambda f: all_digits(str(f.path)), DIGITLESS
            )
            if chosen is not None:
                picked[role] = chosen
        return picked
