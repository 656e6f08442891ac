"""`seed-vc`: Plachtaa/seed-vc fine-tuning. V1 `train.py` writes `DiT_epoch_E_step_S.pth`,
V2 `train_v2.py` writes `CFM_epoch_E_step_S.pth` (and `AR_...` with --train-ar), both in
`runs/<run-name>/`.

Resume is weights only, and both counters restart at 0 on every launch: a name's step
counts the steps of the launch that wrote it. The trainer still resumes from the highest
such number (`max()` over `glob.glob(os.path.join(log_dir, pattern))`: of equal numbers
the first listed, and a run name with glob metacharacters hides every file), so this
model of it does too; of two launches' saves of one step, the newer launch's is the
newer state (docs/trainers/seed-vc.md: what that costs). At start it deletes the lowest
file of a kind itself (V1: when more than 2; V2: when more than 1, AR files included,
which V2 always loads, trained or not). V1's pruning after each save counts every
`DiT_epoch_*.pth`: a stray numbered name there would make it delete real checkpoints.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Literal

from pydantic import model_validator

from trainer_adapters.base import (
    AdapterOptions,
    ArgRule,
    Expectations,
    LaunchHints,
    LayoutDefaults,
    LineRule,
    NamedCheckpoint,
    RuleFails,
    Said,
    TrainerAdapter,
)
from trainer_adapters.rules import config_flag, flag_value, glob_misses, ignored_by

# What each kind's resume glob is; V1 also sorts `DiT_epoch_*.pth` when it prunes.
GLOBS = {"DiT": "DiT_epoch_*_step_*.pth", "CFM": "CFM_epoch_*_step_*.pth", "AR": "AR_epoch_*_step_*.pth"}
PRUNE_GLOB = "DiT_epoch_*.pth"
CANONICAL = re.compile(r"(?:DiT|CFM|AR)_epoch_(?P<epoch>\d+)_step_(?P<step>\d+)\.pth")
IGNORED = (
    (r"ft_model\.pth", "V1's final model (weights only, written at the end): never resumed from"),
    (r"DiT_epoch_.*\.pth", "in V1's pruning glob but not its resume glob: never resumed from"),
)
UNSORTABLE = "Seed-VC sorts by int(the text after the last '_'), which raises on this name"
STRAY = (
    "a stray name in V1's pruning glob (DiT_epoch_*.pth) though not a resume point: its pruning after "
    "each save counts it, and would delete real checkpoints to keep it"
)


def trainer_key(path: Path) -> int | None:
    """`int(path.split("_")[-1].split(".")[0])` over the whole path, as Seed-VC sorts;
    None where that raises."""
    try:
        return int(str(path).split("_")[-1].split(".")[0])
    except ValueError:
        return None


class SeedVcOptions(AdapterOptions):
    version: Literal[1, 2] = 1
    """1: train.py (DiT files); 2: train_v2.py (CFM and AR files)."""
    train_cfm: bool = True
    """Version 2: the command passes --train-cfm (CFM files are part of a resume state)."""
    train_ar: bool = False
    """Version 2: the command passes --train-ar (AR files are part of a resume state)."""

    @model_validator(mode="after")
    def _trains_something(self) -> SeedVcOptions:
        if self.version == 1 and (self.train_ar or not self.train_cfm):
            raise ValueError("train_cfm/train_ar are for version 2: train.py trains the DiT model only")
        if not (self.train_cfm or self.train_ar):
            raise ValueError("train_v2.py trains at least one of train_cfm, train_ar")
        return self


@dataclass(frozen=True)
class SeedVcLayout(LayoutDefaults):
    options: SeedVcOptions
    recursive: bool = False  # runs/<run-name>/ only

    @property
    def roles(self) -> tuple[str, ...]:
        if self.options.version == 1:
            return ("DiT",)
        return tuple(r for r, on in (("CFM", self.options.train_cfm), ("AR", self.options.train_ar)) if on)

    @property
    def globbed(self) -> tuple[str, ...]:
        """What the trainer globs and sorts at start (V2 loads an AR file even untrained)."""
        return ("DiT",) if self.options.version == 1 else ("CFM", "AR")

    def parse(self, path: Path) -> NamedCheckpoint | None:
        # Every kind, whatever the version, so that `verify` judges any Seed-VC file.
        name, key = path.name, trainer_key(path)
        for role, glob in GLOBS.items():
            unsortable = role == "DiT" and fnmatchcase(name, PRUNE_GLOB) and key is None
            if fnmatchcase(name, glob) or unsortable:
                canonical = CANONICAL.fullmatch(name)
                return NamedCheckpoint(path, role, key, epoch=int(canonical["epoch"]) if canonical else None)
        if self.options.version == 1 and fnmatchcase(name, PRUNE_GLOB):
            return NamedCheckpoint(path, "DiT", key, interferes=STRAY)
        return None

    def ignored(self, path: Path) -> str | None:
        return ignored_by(IGNORED, path)

    def expect(self, ckpt: NamedCheckpoint) -> Expectations:
        model = "net.ar" if ckpt.role == "AR" else "net.cfm"
        return Expectations(
            required_keys=(model, "net.length_regulator"),
            step_key="iters",
            epoch_key="epoch",
            model_key="net",
        )

    def unseen(self, ckpt: NamedCheckpoint) -> str | None:
        return glob_misses(Path(ckpt.path.parent.name))  # os.path.join(log_dir, run_name)

    def _found(self, files: Sequence[NamedCheckpoint], role: str) -> list[NamedCheckpoint]:
        return [f for f in files if f.role == role and f.interferes is None and self.unseen(f) is None]

    def pick(self, files: Sequence[NamedCheckpoint]) -> dict[str, NamedCheckpoint]:
        broken = [f for role in self.globbed for f in self._found(files, role) if f.step is None]
        if broken:
            raise RuleFails(broken, UNSORTABLE)
        chosen = {}
        for role in self.globbed:
            mine = self._found(files, role)
            if mine:  # max() keeps the first of equal keys, in directory order
                chosen[role] = max(mine, key=lambda f: f.step or 0)
        return chosen

    def deletes_at_start(self, files: Sequence[NamedCheckpoint]) -> list[NamedCheckpoint]:
        keep = 2 if self.options.version == 1 else 1
        deleted = []
        for role in self.globbed:
            mine = self._found(files, role)
            if len(mine) > keep and all(f.step is not None for f in mine):
                earliest = min(mine, key=lambda f: f.step or 0)
                if earliest is not max(mine, key=lambda f: f.step or 0):
                    deleted.append(earliest)
        return deleted

    def relaunch_warning(self, target_step: int | None) -> str | None:
        """What a user must know when a relaunch resumes from `target_step`."""
        if target_step is None:
            return None
        pruning = (
            "train.py's keep-2 pruning deletes a save numbered below both files on disk as it is written"
            if self.options.version == 1
            else f"train_v2.py's keep-1 pruning deletes every save below step {target_step} as it is written"
        )
        return (
            f"Seed-VC resumes only the weights of step {target_step} and counts from 0 again (optimizer, "
            f"LR schedule and --max-steps start over); {pruning}."
        )


def _layout(options: AdapterOptions) -> SeedVcLayout:
    assert isinstance(options, SeedVcOptions)
    return SeedVcLayout(options)


def _recognise(path: Path) -> bool:
    if CANONICAL.fullmatch(path.name) is None:
        return False
    # Both scripts copy their config into the run directory; presets put it in runs/.
    return path.parent.parent.name == "runs" or any(path.parent.glob("*.y*ml"))


FATAL = (
    (
        r"^\s*assert len\(self\.data\) != 0$",
        "no audio file (.wav .mp3 .flac .ogg .m4a .opus) under --dataset-dir",
    ),
    (
        r"AssertionError: At least one model should be trained",
        "train_v2.py needs --train-cfm and/or --train-ar",
    ),
    (r"ValueError: Unsupported (?:vocoder|speech tokenizer) type", "--config names a model Seed-VC lacks"),
    (
        r"size mismatch for ",
        "a checkpoint in runs/<run-name> was trained with another model config than --config: "
        "use the run's original config, or a new --run-name",
    ),
)
NUMBER = r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|nan|inf)"
V2_LINE = rf"^Epoch (?P<epoch>\d+), Iteration \d+, Loss: (?P<loss>{NUMBER}), Loss AR: \S+, Loss CFM: \S+"
LINES = (
    # V1 prints this launch's step (the number its file names carry); the loss is an EMA.
    LineRule(Said.PROGRESS, r"^epoch (?P<epoch>\d+), step (?P<step>\d+), loss: "),
    LineRule(Said.LOSS, rf"^epoch (?P<epoch>\d+), step (?P<step>\d+), loss: (?P<loss>{NUMBER})$"),
    # V2's "Iteration" is the batch index within the epoch, not a step: the epoch only.
    LineRule(Said.PROGRESS, V2_LINE),
    LineRule(Said.PROGRESS, r"^Epoch (?P<epoch>\d+) completed in [\d.]+ seconds$"),
    LineRule(Said.LOSS, V2_LINE),
    LineRule(Said.LOADED, r"^Loaded checkpoint from (?P<path>.*DiT_epoch_[^/\\]*_step_[^/\\]*\.pth)$"),
    # V2's wrapper repeats it with "..." after the path: only the trainer's line counts.
    LineRule(Said.LOADED, r"^Loading (?:CFM|AR) checkpoint from (?P<path>.+\.pth)$"),
    LineRule(Said.FRESH_START, r"^Failed to load any checkpoint, training from scratch\.$"),
    # V1 never raises on a checkpoint that does not fit --config: it drops the keys whose
    # shape differs (or that the model lacks) and trains them from scratch.
    LineRule(Said.FRESH_START, r"^Warning: Skipped loading some keys due to shape mismatch: "),
    # The config's pretrained_model (downloaded from Hugging Face): not this run's progress.
    LineRule(Said.FRESH_START, r"^Loaded checkpoint from (?!.*DiT_epoch_[^/\\]*_step_[^/\\]*\.pth$)"),
    LineRule(Said.COMPLETED, r"^Final model saved at (?P<path>.+)$"),
    # V1 prints "Saving.." and V2 "Saving checkpoint..." before each periodic save.
    LineRule(Said.SAVED, r"^Saving(?:\.\.| checkpoint\.\.\.)$"),
    LineRule(Said.COMPLETED, r"^Reached max (?:steps|epochs), stopping training$"),
    *(LineRule(Said.FATAL, pattern, explain) for pattern, explain in FATAL),
)


def _options_from(argv: Sequence[str]) -> dict[str, object]:
    if not any(Path(arg).name == "train_v2.py" for arg in argv):
        return {}
    return {"version": 2, "train_cfm": "--train-cfm" in argv, "train_ar": "--train-ar" in argv}


PRETRAINED = (
    "it makes Seed-VC load that file on every launch and ignore runs/<run-name>, so every relaunch "
    "would start over from it; drop it (to start a run from a model, launch once with it by hand, then "
    "supervise the command without it)"
)

ADAPTER = TrainerAdapter(
    name="seed-vc",
    summary="Seed-VC fine-tuning: train.py (DiT_epoch_*_step_*.pth) or train_v2.py (CFM_/AR_ files)",
    options=SeedVcOptions,
    layout=_layout,
    recognise=_recognise,
    lines=LINES,
    args=tuple(
        ArgRule((flag,), f"{flag}: {PRETRAINED}", boolean=False)
        for flag in ("--pretrained-ckpt", "--pretrained-cfm-ckpt", "--pretrained-ar-ckpt")
    ),
    launch=LaunchHints(
        example=(
            "python train.py --config ./configs/presets/config_dit_mel_seed_uvit_xlsr_tiny.yml "
            "--dataset-dir DATA --run-name my_run --batch-size 2 --max-steps 1000 --max-epochs 1000 "
            "--save-every 500 --num-workers 0"
        ),
        checkpoint_dir=lambda argv: f"runs/{flag_value(argv, '--run-name') or 'my_run'}",
        options=lambda argv: _options_from(argv),
    ),
    config_files=config_flag("--config"),
    docs="docs/trainers/seed-vc.md",
    steps_restart=True,
    relaunch_warning=lambda options, step: _layout(options).relaunch_warning(step),
)
