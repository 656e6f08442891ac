"""The checkpoint layout VITS passed on to GPT-SoVITS s2 and Applio (RVC).

`G_<n>.pth` and `D_<n>.pth` in one directory. On resume the trainer globs `G_*.pth` and
`D_*.pth` separately (`glob.glob(os.path.join(dir, "G_*.pth"))`: a directory whose name
holds glob metacharacters hides its own files) and takes, for each, the file whose
*path as the trainer spells it* has the largest `int(all its digits)` (ties: the last
in directory order) — so the two may come from different saves, a sentinel number
(233333333333, 2333333) outranks every real step, and a matching name without digits in
a digit-less directory makes `int("")` raise (which these trainers swallow: a silent
fresh start). It loads the roles in its own order and stops at the first failure.
This module models exactly that; the adapters add their keys and facts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from trainer_adapters.base import Expectations, LayoutDefaults, LineRule, NamedCheckpoint, RuleFails, Said
from trainer_adapters.rules import all_digits, compiled, glob_misses, ignored_by, max_by

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
SAVED = LineRule(Said.SAVED, MSG + r"Saving model and optimizer state at iteration \d+ to ")
EPOCH_END = LineRule(Said.PROGRESS, MSG + r"====> Epoch: (?P<epoch>\d+)$")
DISK_FULL = r"PytorchStreamWriter failed writing file .*file write failed"


def as_spelled(path: Path) -> Path:
    return path


@dataclass(frozen=True)
class GlobLayout(LayoutDefaults):
    roles: tuple[str, ...]  # ("G", "D"), or ("G",) where there is no discriminator
    required_keys: tuple[str, ...]
    sentinel: int | None = None  # the fixed "save latest" number, rewritten in place
    # The trainer counts progress in epochs (content `iteration`) and its file numbers
    # are either a sentinel or a global step it recomputes on resume: order by epoch,
    # then by the number (one epoch may hold several saves).
    steps_from_epochs: bool = False
    not_resume_points: tuple[tuple[str, str], ...] = ()  # (name regex, what it is)
    recursive: bool = False
    # The order the trainer loads the roles in; it stops at the first that fails.
    load_order: tuple[str, ...] = ()
    # What stays loaded when a later role fails: True where the earlier ones keep their
    # weights (VITS); False where the fallback loads pretrained weights over them all.
    keeps_partial: bool = False
    # Our absolute path -> the path the trainer globs and digit-sorts (relative to its cwd).
    spell: Callable[[Path], Path] = field(default=as_spelled, compare=False)
    # Keys of `optimizer.param_groups[*]` its LR schedulers need on resume (outside its try).
    param_group_keys: tuple[str, ...] = ()

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
            return NamedCheckpoint(path, m["role"], None, content_step=True, save=number)
        return NamedCheckpoint(path, m["role"], number)

    def ignored(self, path: Path) -> str | None:
        return ignored_by(self.not_resume_points, path)

    def expect(self, ckpt: NamedCheckpoint) -> Expectations:
        # `iteration` holds the epoch (despite its name), for G and D alike.
        step_key = "iteration" if self.steps_from_epochs or ckpt.in_place else None
        return Expectations(
            self.required_keys,
            step_key=step_key,
            epoch_key="iteration",
            model_key="model",
            each_item=(("optimizer.param_groups", self.param_group_keys),) if self.param_group_keys else (),
        )

    def rank(self, ckpt: NamedCheckpoint) -> tuple[int, ...]:
        # Within one epoch, as the digit sort has it: the sentinel outranks every number.
        save = (
            ckpt.save if ckpt.save is not None else (self.sentinel if ckpt.in_place and self.sentinel else -1)
        )
        return (ckpt.step if ckpt.step is not None else -1, save)

    def unseen(self, ckpt: NamedCheckpoint) -> str | None:
        return glob_misses(self.spell(ckpt.path).parent)

    def pick(self, files: Sequence[NamedCheckpoint]) -> dict[str, NamedCheckpoint]:
        seen = {replace(f, path=self.spell(f.path)): f for f in files if self.unseen(f) is None}
        try:
            chosen = {role: self._newest(list(seen), role) for role in self.load_order or self.roles}
        except RuleFails as failure:
            raise RuleFails([seen[f] for f in failure.culprits], failure.why) from None
        picked: dict[str, NamedCheckpoint] = {}
        for role in self.load_order or self.roles:
            found = chosen[role]
            if found is None:  # `f_list[-1]` of nothing raises: the trainer's except takes over
                return picked if self.keeps_partial else {}
            picked[role] = seen[found]
        return picked

    def _newest(self, files: list[NamedCheckpoint], role: str) -> NamedCheckpoint | None:
        return max_by([f for f in files if f.role == role], lambda f: all_digits(str(f.path)), DIGITLESS)
