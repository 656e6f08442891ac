"""The one small interface every trainer adapter shares.

An adapter is mostly data: a name, the options a config may set under `[adapter]`,
facts about the trainer (log-line rules, exit codes, launch hints), and a `Layout`
built from those options that answers three questions about the checkpoint directory:

- `parse(path)`: is this file one the trainer's resume logic looks at, and which
  role/step does its name say? (Exports, pretrained weights and temp files are not:
  they return None, and `ignored(path)` says what they are.)
- `expect(ckpt)`: what a good file of that role must contain (keys, step key, globals).
- `pick(files)`: which file per role the trainer's *own* resume logic would load from
  these files — a faithful model, so the planner can prove where the trainer will land.
  `files` come in directory order (what `os.listdir` and `glob` return), which decides
  the trainer's ties. Where the trainer's rule itself would fail on a file (a name its
  sort cannot parse), `pick` raises `RuleFails` naming the files to blame. It may name
  files of roles outside `roles`: loaded too, but not part of a resume state.
- `rank(ckpt)`: how the trainer orders its states, newest last.
- `unseen(ckpt)`: why the trainer's own listing can never find this file (a glob
  pattern that its directory's name breaks), if it cannot.
- `deletes_at_start(files)`: what the trainer itself removes when it starts.

`LayoutDefaults` gives the last three for trainers without such habits.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict

from supervisor.core.said import Said as Said  # the adapters name what a line says


class AdapterOptions(BaseModel):
    """Adapter-specific keys of the `[adapter]` table. Unknown keys are errors. A string
    right after a field describes it (`init` writes it into the config)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


@dataclass(frozen=True)
class NamedCheckpoint:
    """What an adapter reads from a checkpoint's path."""

    path: Path
    role: str  # which part of a resume state: "model", or "G" and "D" for paired layouts
    step: int | None  # from the name; None when the name does not count progress
    epoch: int | None = None
    in_place: bool = False  # the trainer rewrites this very name (a "latest" or sentinel file)
    # The step comes from the content (Expectations.step_key) although the name is not
    # fixed: for trainers whose file numbers do not order their progress.
    content_step: bool = False
    # Which save of its step this is, where a step holds several: the number in the name
    # when it is not the step (VITS's names count batches, its states epochs). The files
    # of one resume state share it.
    save: int | None = None
    # No resume point, but the trainer's own housekeeping counts it (a stray name in its
    # pruning glob): why it must leave the directory.
    interferes: str | None = None


@dataclass(frozen=True)
class Expectations:
    """What the validator must find inside a good checkpoint of one role."""

    required_keys: tuple[str, ...] = ()
    step_key: str | None = None
    epoch_key: str | None = None
    allowed_globals: tuple[str, ...] = ()
    # The state dict whose keys and tensor shapes must not change from one verified
    # checkpoint of a role to the next (trainers that load it with strict=False skip
    # mis-shaped keys silently).
    model_key: str | None = None
    # (dotted key of a list, keys each of its items must hold): what the trainer's
    # resume needs outside its try, e.g. ("optimizer.param_groups", ("initial_lr",)).
    each_item: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # (dotted key of a mapping, keys it must hold unless it is empty): a state the
    # trainer restores outside its try when there is one (Applio's GradScaler).
    when_not_empty: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # Top-level keys whose tensors need not be finite: bookkeeping, not training state
    # (Lightning's ModelCheckpoint keeps kth_value = inf until a metric is monitored).
    finite_except: tuple[str, ...] = ()


class RuleFails(Exception):
    """The trainer's own resume rule would raise on these files: it would crash, or
    (for trainers that swallow the error) silently start from scratch."""

    def __init__(self, culprits: Sequence[NamedCheckpoint], why: str) -> None:
        super().__init__(why)
        self.culprits = tuple(culprits)
        self.why = why


class Layout(Protocol):
    @property
    def roles(self) -> tuple[str, ...]:
        """The roles that together make one resume state."""
        ...

    @property
    def recursive(self) -> bool:
        """Whether the trainer looks into subdirectories of the checkpoint directory."""
        ...

    def parse(self, path: Path) -> NamedCheckpoint | None: ...

    def ignored(self, path: Path) -> str | None:
        """Why a file that `parse` refuses is not a resume point, when it is a known kind."""
        ...

    def expect(self, ckpt: NamedCheckpoint) -> Expectations: ...

    def pick(self, files: Sequence[NamedCheckpoint]) -> dict[str, NamedCheckpoint]:
        """The trainer's choice per role ({} = it would start from scratch). Files whose
        step comes from their content carry it here when it is known."""
        ...

    def rank(self, ckpt: NamedCheckpoint) -> tuple[int, ...]:
        """The trainer's order of resume states, newest last."""
        ...

    def unseen(self, ckpt: NamedCheckpoint) -> str | None:
        """Why the trainer's own listing never finds this file, if it does not."""
        ...

    def deletes_at_start(self, files: Sequence[NamedCheckpoint]) -> list[NamedCheckpoint]:
        """What the trainer removes from these files (its own pruning) when it starts."""
        ...


class LayoutDefaults:
    """For trainers that order states by step (then by save), find every file they look
    for, and delete nothing at start."""

    def rank(self, ckpt: NamedCheckpoint) -> tuple[int, ...]:
        return (ckpt.step if ckpt.step is not None else -1, ckpt.save if ckpt.save is not None else -1)

    def unseen(self, ckpt: NamedCheckpoint) -> str | None:
        return None

    def deletes_at_start(self, files: Sequence[NamedCheckpoint]) -> list[NamedCheckpoint]:
        return []


@dataclass(frozen=True)
class LineRule:
    said: Said
    pattern: str  # a regular expression, searched in each line of stdout and stderr
    explain: str = ""  # for FATAL: what is wrong and what to do


@dataclass(frozen=True)
class ArgRule:
    """A command-line flag that makes supervision unsafe or useless (checked at launch)."""

    flags: tuple[str, ...]
    problem: str
    # A flag given as `--flag False` (argparse-style booleans) is not set.
    boolean: bool = True
    # For what flags cannot say (positional arguments): argv -> the problem applies.
    applies: Callable[[Sequence[str]], bool] | None = None


@dataclass(frozen=True)
class LaunchHints:
    """How to run the trainer under the supervisor (written by `init`, shown in docs)."""

    example: str  # a typical command, as the trainer's README gives it
    cwd: str = "."  # where it must run from, relative paths being what they are
    # The checkpoint directory as the trainer derives it from its command line, if it
    # can be told from there: argv -> a path relative to cwd.
    checkpoint_dir: Callable[[Sequence[str]], str | None] | None = None
    # Adapter options the command says something about (argv -> {key: value}).
    options: Callable[[Sequence[str]], dict[str, Any]] | None = None
    # For a trainer that puts its checkpoints where its installed package says (not
    # below cwd): Python source for the trainer's own interpreter, given the argv as JSON
    # in sys.argv[1], printing {"path": absolute directory} or {"error": why not}.
    # `init` runs it; it must import nothing of the trainer that is slow to import.
    checkpoint_dir_probe: str | None = None


@dataclass(frozen=True)
class Metrics:
    """Where a trainer writes losses that its output does not show (TensorBoard)."""

    # (options, checkpoint dir) -> the directory of its `events.out.tfevents.*` files
    directory: Callable[[AdapterOptions, Path], Path]
    tags: str  # a regex (searched) selecting the loss scalars whose values must stay finite


@dataclass(frozen=True)
class TrainerAdapter:
    name: str
    summary: str
    options: type[AdapterOptions]
    layout: Callable[[AdapterOptions], Layout]
    # False for trainers whose exit status says nothing (they exit 0 on a crash or
    # non-zero on success); completion must then come from a COMPLETED line.
    exit_codes_trusted: bool = True
    # Does this file (name and directory) look like one of this trainer's resume
    # checkpoints? Used by `verify` without --adapter and by `init --from-dir`.
    recognise: Callable[[Path], bool] | None = None
    lines: tuple[LineRule, ...] = ()
    args: tuple[ArgRule, ...] = ()
    launch: LaunchHints | None = None
    # A problem with these options for this checkpoint directory (its name may say what
    # the options must be), checked when the config is loaded.
    check_dir: Callable[[AdapterOptions, Path], str | None] | None = None
    # Without `checkpoint_dir` only the process would be supervised: allowed for generic.
    needs_checkpoint_dir: bool = True
    # Whether the trainer uses fp16 loss scaling by default (one non-finite loss can
    # be a skipped step rather than a diverged run).
    fp16_loss_scaling: bool = False
    # The trainer counts steps from 0 at every launch: a verified step then says nothing
    # of progress across attempts, and progress is an attempt that ran stably instead.
    steps_restart: bool = False
    # What the user must know when a relaunch resumes from the given step (a warning in
    # the ledger before the launch), if anything.
    relaunch_warning: Callable[[AdapterOptions, int | None], str | None] | None = None
    # Which number of a progress line counts in the unit of the checkpoints' steps:
    # "step" (readings' `step`, and heartbeat steps) or "epoch" (readings' `epoch`).
    position_unit: Literal["step", "epoch"] = "step"
    # Where it resumes, for trainers whose fresh starts are told by the first epoch they
    # report: 0 = in the saved epoch (VITS: its first step can be far below the resumed
    # one), 1 = in the epoch after it (GPT-SoVITS s2, Applio). None: by the first step.
    first_epoch_after_resume: int | None = None
    # The trainer's own config files, from its command line (argv, options -> paths
    # relative to cwd): fingerprinted at every launch to notice edits between restarts.
    config_files: Callable[[Sequence[str], AdapterOptions], list[str]] | None = None
    # Keys the trainer itself rewrites in those files (dotted JSON keys): not an edit.
    config_ignore_keys: tuple[str, ...] = ()
    metrics: Metrics | None = None
    # Whether its own torch.load is weights-only, from the versions of its packages
    # ({"torch": "2.13.0", "pytorch-lightning": ...}; None where not installed); None: cannot tell.
    weights_only_load: Callable[[Mapping[str, str | None]], bool | None] | None = None
    docs: str = ""  # the page in docs/ about this trainer
