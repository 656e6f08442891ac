"""`gpt-sovits-s1`: GPT-SoVITS stage 1 (the GPT), `GPT_SoVITS/s1_train.py`, PyTorch Lightning.

Checkpoints are `logs/<exp>/logs_s1_<ver>/ckpt/epoch=E-step=S.ckpt` (E: 0-based epoch, S: optimizer
steps), full Lightning states. On every start the script takes, of `os.listdir(ckpt)`, the names that
`re.match(r"epoch=(\\d+)-step=(\\d+)\\.ckpt", name)` accepts (anchored at the start only: a leftover
`epoch=3-step=9.ckpt.bad` counts; `-v1` names never do), the max by (E, S), and Lightning restores it.
A file that does not load crashes the run, and every relaunch; no match -> `ckpt_path: None`, a fresh
start from `pretrained_s1`. With `if_save_latest` (on by default) each save deletes every other file in
ckpt/, so often the one good state left is the supervisor's verified copy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from trainer_adapters.base import (
    AdapterOptions,
    Expectations,
    LaunchHints,
    LayoutDefaults,
    LineRule,
    NamedCheckpoint,
    Said,
    TrainerAdapter,
)
from trainer_adapters.rules import NamePattern, compiled, config_flag, ignored_by, release

# The trainer's regex with re.match: a prefix. `(?s:.*)` makes the full match a prefix match.
TRAINER_REGEX = r"epoch=(\d+)-step=(\d+)\.ckpt"
NAME = NamePattern(r"epoch=(?P<epoch>\d+)-step=(?P<step>\d+)\.ckpt(?s:.*)")

IGNORED = (
    (
        r"epoch=\d+-step=\d+-v\d+\.ckpt",
        "Lightning's version suffix (-vN): the trainer's regex never matches it",
    ),
    (r".+-e\d+\.ckpt", "half-precision weights export (GPT_weights*): for inference, not a resume point"),
    (r"s1.*\.ckpt", "pretrained GPT weights (key `weight`): loaded at every start, not a resume point"),
    (r"\d+\.\d+\.pth", "temporary file of the weights export (torch.save in the cwd, then moved)"),
)

EXPECT = Expectations(
    # What Lightning's restore reads: without optimizer_states or lr_schedulers it refuses (a
    # weights-only save); `loops` (the loop progress) is in every checkpoint since Lightning 1.6.
    # hyper_parameters are not needed: the module is built from the yaml.
    required_keys=(
        "state_dict",
        "optimizer_states",
        "lr_schedulers",
        "loops",
        "epoch",
        "global_step",
        "pytorch-lightning_version",
    ),
    step_key="global_step",
    epoch_key="epoch",
    # hyper_parameters.output_dir is Path(output_dir): a PosixPath where the supervisor runs
    # (POSIX only). A WindowsPath cannot even be built on POSIX, and no pure path is ever saved.
    allowed_globals=("pathlib.PosixPath",),
    model_key="state_dict",
    # Lightning's callback states (ModelCheckpoint's kth_value, best_model_score) are inf
    # until a monitored metric comes: bookkeeping, never weights.
    finite_except=("callbacks",),
)


class S1Options(AdapterOptions):
    """Nothing to set. The checkpoint directory (`output_dir` in the yaml, + /ckpt) is
    `checkpoint_dir`; `if_save_latest` changes what is on disk, not the trainer's rule."""


def order(ckpt: NamedCheckpoint) -> tuple[int, int] | None:
    """The trainer's sort key, from the name (restored copies carry no epoch of their own)."""
    m = compiled(TRAINER_REGEX).match(ckpt.path.name)
    return (int(m.group(1)), int(m.group(2))) if m else None


@dataclass(frozen=True)
class S1Layout(LayoutDefaults):
    roles: tuple[str, ...] = ("model",)
    recursive: bool = False

    def parse(self, path: Path) -> NamedCheckpoint | None:
        return NAME.match(path)

    def ignored(self, path: Path) -> str | None:
        return ignored_by(IGNORED, path)

    def expect(self, ckpt: NamedCheckpoint) -> Expectations:
        return EXPECT

    def rank(self, ckpt: NamedCheckpoint) -> tuple[int, ...]:
        # The trainer's order, (epoch, step); a restored copy keeps its original's name.
        return order(ckpt) or (-1, ckpt.step if ckpt.step is not None else -1)

    def pick(self, files: Sequence[NamedCheckpoint]) -> dict[str, NamedCheckpoint]:
        keyed = [(key, f) for f in files if (key := order(f)) is not None]
        if not keyed:
            return {}
        best = max(key for key, _ in keyed)
        # sorted(reverse=True)[0] is stable: of equal keys the first listed wins.
        return {"model": next(f for key, f in keyed if key == best)}


def recognise(path: Path) -> bool:
    return (
        NAME.match(path) is not None
        and path.parent.name == "ckpt"
        and path.parent.parent.name.startswith("logs_s1")
    )


MISMATCH = (
    "The model weights do not fit the model the yaml describes. s1_train.py loads pretrained_s1 with a "
    "strict load_state_dict at every start, resumes included, so every relaunch fails the same way. "
    "Point pretrained_s1 at the weights of the same version as the yaml (s1longer.yaml for v1, "
    "s1longer-v2.yaml for v2 and later)."
)
WEIGHTS_ONLY = (
    "Lightning 2.6+ leaves torch (2.6+) to load checkpoints weights-only, and s1 checkpoints hold a "
    "pathlib path in hyper_parameters, so every resume fails the same way. The checkpoint itself is fine "
    "(the supervisor verified it allowing exactly that class). Set [checkpoints] trainer_safe_globals = "
    "true (the supervisor then allows exactly that class inside the trainer's process, with the trainer "
    "unmodified), or pin pytorch-lightning<2.6."
)


def loads_weights_only(versions: Mapping[str, str | None]) -> bool | None:
    """s1_train.py passes no weights-only choice to trainer.fit: Lightning before 2.6 asks
    torch for a full unpickle, 2.6 and later leave it to torch, weights-only from 2.6."""
    torch = release(versions.get("torch"))
    lightning = release(versions.get("pytorch-lightning")) or release(versions.get("lightning"))
    if torch is None or lightning is None:
        return None
    return torch >= (2, 6) and lightning >= (2, 6)


LINES = (
    # Lightning's tqdm bar on stdout, one per epoch (0-based); the bar's n/N counts batches.
    LineRule(Said.PROGRESS, r"\bEpoch (?P<epoch>\d+):\s+\d+%\|"),
    # NaN renders `nan.0`, inf `inf.0`, -inf `-inf.` (Lightning pads tqdm's numbers).
    LineRule(Said.LOSS, r"\bEpoch (?P<epoch>\d+):.*\btotal_loss_step=(?P<loss>[^,\]\s]+)"),
    LineRule(Said.LOADED, r"Restored all states from the checkpoint at (?P<path>.+?)\s*$"),
    LineRule(Said.FRESH_START, r"^ckpt_path: None\s*$"),
    LineRule(Said.COMPLETED, r"`Trainer\.fit` stopped: `max_epochs=\d+` reached"),
    LineRule(
        Said.FATAL,
        r"Error\(s\) in loading state_dict for Text2SemanticLightningModule|size mismatch for \S+: copying",
        MISMATCH,
    ),
    LineRule(Said.FATAL, r"Unsupported global: GLOBAL pathlib\.[\w.]*Path\b", WEIGHTS_ONLY),
)


def _layout(options: AdapterOptions) -> S1Layout:
    assert isinstance(options, S1Options)
    return S1Layout()


ADAPTER = TrainerAdapter(
    name="gpt-sovits-s1",
    summary="GPT-SoVITS stage 1 (GPT, Lightning): logs/<exp>/logs_s1_<ver>/ckpt/epoch=E-step=S.ckpt",
    options=S1Options,
    layout=_layout,
    recognise=recognise,
    lines=LINES,
    # The script writes its config to a temp yaml; the checkpoint directory is in there.
    launch=LaunchHints(example="python -s GPT_SoVITS/s1_train.py --config_file TEMP/tmp_s1.yaml"),
    fp16_loss_scaling=True,  # the shipped yamls train with precision 16-mixed (a GradScaler)
    # Its lines count epochs only; heartbeat steps (Lightning's global_step) match the names.
    position_unit="step",
    config_files=config_flag("--config_file", "-c"),
    weights_only_load=loads_weights_only,
    docs="docs/trainers/gpt-sovits-s1.md",
)
