"""`applio`: IAHispano/Applio (RVC), `core.py train` or `rvc/train/train.py`.

`logs/<model>/G_<n>.pth` and `D_<n>.pth` (or the sentinel pair `G_2333333.pth` /
`D_2333333.pth`, rewritten in place, with "save only latest"), written G first, then D.
`n` is a global step the trainer recomputes on resume; the real counter is the epoch in
`iteration`, so states are ordered by it. On resume it loads the newest `D_*.pth`, then
the newest `G_*.pth` (picked independently, digit sort over the full path), and goes on
from G's epoch + 1; any error there (no D at all included) is swallowed: a restart from
epoch 1 from the pretrained weights, silent when there are none. Outside that `try`: LR
schedulers with `last_epoch = epoch - 2` (param groups need `initial_lr`) and D's
GradScaler state (`scaler`, loaded when not empty): a bad one crash-loops. Exit codes
say nothing (the parent exits 0 whatever its child did): completion is the "successfully
completed" line. Losses go to TensorBoard only, not to stdout.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from trainer_adapters.base import (
    AdapterOptions,
    ArgRule,
    Expectations,
    LaunchHints,
    LineRule,
    Metrics,
    NamedCheckpoint,
    Said,
    TrainerAdapter,
)
from trainer_adapters.rules import flag_value
from trainer_adapters.vits_family import APPLIO_MARKERS, GlobLayout

SENTINEL = 2333333


class ApplioOptions(AdapterOptions):
    """Nothing to set: the directory (logs/<model name>) says it all."""


# What torch's GradScaler.load_state_dict reads from a state that is not empty.
SCALER_KEYS = ("scale", "growth_factor", "backoff_factor", "growth_interval", "_growth_tracker")


@dataclass(frozen=True)
class ApplioLayout(GlobLayout):
    def expect(self, ckpt: NamedCheckpoint) -> Expectations:
        expected = super().expect(ckpt)
        if ckpt.role != "D":
            return expected
        return replace(expected, when_not_empty=(("scaler", SCALER_KEYS),))


def _layout(options: AdapterOptions) -> GlobLayout:
    return ApplioLayout(
        roles=("G", "D"),
        # What `load_checkpoint` needs; `learning_rate` and `scaler` are written too but
        # read with .get(), so a file without them still resumes.
        required_keys=("model", "iteration", "optimizer"),
        sentinel=SENTINEL,
        steps_from_epochs=True,
        not_resume_points=(
            (r".+_\d+e_\d+s\.pth", "an inference export (weights only, written by extract_model)"),
            (r".+_\d+e_\d+s_best_epoch\.pth", "a best-epoch inference export (Applio <= 3.6.3)"),
        ),
        load_order=("D", "G"),
        param_group_keys=("initial_lr",),
    )


def _recognise(path: Path) -> bool:
    path = path.absolute()
    m = re.fullmatch(r"[GD]_(\d+)\.pth", path.name)
    if m is None or path.parent.parent.name != "logs":
        return False
    return int(m[1]) == SENTINEL or any((path.parent / marker).exists() for marker in APPLIO_MARKERS)


def _positional(argv: Sequence[str]) -> list[str] | None:
    """The arguments of `rvc/train/train.py <model_name> <save_every_epoch> ...`, if that
    is what the command runs."""
    at = next((i for i, arg in enumerate(argv) if arg.replace("\\", "/").endswith("train/train.py")), None)
    return list(argv[at + 1 :]) if at is not None else None


def _checkpoint_dir(argv: Sequence[str]) -> str | None:
    if any(Path(arg).name == "core.py" for arg in argv):
        name = flag_value(argv, "--model-name", "--model_name")
    else:
        args = _positional(argv)
        name = args[0] if args else None
    return f"logs/{name}" if name else None


# Where `cleanup` is among train.py's positional arguments: 14 of them since 3.6.4, 16
# before (overtraining_detector and overtraining_threshold came before it).
CLEANUP_AT = {14: 11, 16: 13}


def _positional_cleanup(argv: Sequence[str]) -> bool:
    """A direct train.py launch whose cleanup argument is on, or cannot be found."""
    args = _positional(argv)
    if args is None:
        return False
    at = CLEANUP_AT.get(len(args))
    return at is None or args[at].lower() != "false"


RESTART_CANNOT_FIX = "restarting cannot fix this"
LINES = (
    # The step printed is a global step recomputed on resume; this adapter counts epochs.
    LineRule(Said.PROGRESS, r"\| epoch=(?P<epoch>\d+) \| step=\d+ \| time=\d\d:\d\d:\d\d \| training_speed="),
    LineRule(Said.LOADED, r"^Loaded checkpoint '(?P<path>.+)' \(epoch (?P<epoch>\d+)\)$"),
    # utils.save_checkpoint (G_/D_ files); an export's line ends "(epoch E and step S)".
    LineRule(Said.SAVED, r"^Saved model '.+' \(epoch \d+\)$"),
    LineRule(Said.FRESH_START, r"^Loaded pretrained \(G\) '(?P<path>.*)'"),
    # The early probe of the newest G: the only trace of a G that cannot be loaded, and
    # the resume that follows falls back to a fresh start.
    LineRule(Said.FRESH_START, r"^Failed to load checkpoint: .*Using default number of speakers"),
    LineRule(
        Said.COMPLETED,
        r"^Training has been successfully completed with (?P<epoch>\d+) epoch, (?P<step>\d+) steps",
    ),
    # Releases up to 3.6.3 stop early on their own overtraining detector (then os._exit).
    LineRule(Said.COMPLETED, r"^Overtraining detected at epoch (?P<epoch>\d+)"),
    # The only loss on stdout: the last batch's generator loss, once, at the very end.
    LineRule(
        Said.LOSS,
        r"^Training has been successfully completed with (?P<epoch>\d+) epoch, (?P<step>\d+) steps"
        r" and (?P<loss>\S+) loss gen\.",
    ),
    LineRule(
        Said.FATAL,
        r"Config file not found at (?P<path>.+?)\. Did you run preprocessing and feature extraction",
        "logs/<model>/config.json is missing: run `core.py preprocess` and `core.py extract` for this"
        " model name first, and run from the Applio root (the directory is <cwd>/logs/<model>); "
        + RESTART_CANNOT_FIX,
    ),
    LineRule(
        Said.FATAL,
        r"Error: Pretrained model sample rate \(.*\) does not match dataset audio sample rate",
        "the --sample-rate of the command differs from the dataset's: pass the rate the dataset was"
        " preprocessed at (or preprocess again); " + RESTART_CANNOT_FIX,
    ),
    LineRule(
        Said.FATAL,
        r"Not enough data (?:present )?in (?:in )?the training set",
        "fewer than 3 batches per epoch: add audio or lower --batch-size, and preprocess again; "
        + RESTART_CANNOT_FIX,
    ),
    LineRule(
        Said.FATAL,
        r"parameters of the pretrain(?:ed)? model .*do not match the selected model",
        "the pretrained G/D do not fit this model (sample rate, vocoder or architecture): pick"
        " matching pretrained files; " + RESTART_CANNOT_FIX,
    ),
)

ARGS = (
    ArgRule(
        ("--cleanup",),
        "--cleanup deletes every G_*/D_* checkpoint in logs/<model> when the trainer starts, so"
        " each relaunch would throw the run away: leave it out (3.6.4: --cleanup False)",
    ),
    ArgRule(
        (),
        "rvc/train/train.py run directly: its cleanup argument (12th of 14; 14th of 16 before"
        " 3.6.4) must be False, or each relaunch deletes every checkpoint; with another number"
        " of arguments the supervisor cannot tell where it is (use core.py train)",
        applies=_positional_cleanup,
    ),
)

ADAPTER = TrainerAdapter(
    name="applio",
    summary="Applio (RVC): logs/<model>/G_<n>.pth + D_<n>.pth or the G_/D_2333333 pair, by epoch",
    options=ApplioOptions,
    layout=_layout,
    exit_codes_trusted=False,
    recognise=_recognise,
    lines=LINES,
    args=ARGS,
    launch=LaunchHints(
        example="python core.py train --model-name myvoice --save-every-epoch 10 --save-only-latest"
        " --total-epoch 300 --sample-rate 40000 --batch-size 8 --gpu 0",
        cwd=".",
        checkpoint_dir=_checkpoint_dir,
    ),
    fp16_loss_scaling=True,
    position_unit="epoch",
    # Epoch = G's iteration + 1. Without pretrained weights its fallback prints nothing:
    # a fresh start shows only in the first epoch it reports.
    first_epoch_after_resume=1,
    config_files=lambda argv, options: [f"{d}/config.json"] if (d := _checkpoint_dir(argv)) else [],
    config_ignore_keys=("process_pids",),  # train.py writes its workers' PIDs into it
    # Losses reach TensorBoard only (logs/<model>/eval), never stdout.
    metrics=Metrics(directory=lambda options, checkpoint_dir: checkpoint_dir / "eval", tags=r"^loss"),
    docs="docs/trainers/applio.md",
)
