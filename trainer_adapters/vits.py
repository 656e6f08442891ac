"""`vits`: jaywalnut310/vits (`train.py`, `train_ms.py`), run from the repo root.

`./logs/<-m model>/G_<step>.pth` and `D_<step>.pth`: the number is the global step (a
0-based batch counter, saved every `eval_interval` steps), G written before D, nothing
ever deleted, plain `torch.save` onto the final name. Keys `model`, `iteration` (the
epoch, despite its name), `optimizer`, `learning_rate`. On start it globs G and D
separately, takes for each the largest int of all the digits in `./logs/<model>/<name>`,
loads G then D; any error at all (a torn D, a digit-less name) is swallowed by a bare
`except:` and it starts over at epoch 1, step 0, silently (with G's weights if only D
failed). It resumes at the start of D's epoch with `global_step = (epoch - 1) *
len(train_loader)`: relaunched on another GPU count or batch size, a newer epoch gets
*lower* numbers. So states are ordered by the epoch inside the files (then by number),
and whatever would make the digit sort pick an older epoch is moved aside. Its LR
schedulers are built outside the `try` (`last_epoch=epoch - 2`): an optimizer state
without `initial_lr` in its param groups crashes every relaunch.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from trainer_adapters.base import AdapterOptions, LaunchHints, LineRule, Said, TrainerAdapter
from trainer_adapters.rules import config_flag, flag_value
from trainer_adapters.vits_family import (
    APPLIO_MARKERS,
    DISK_FULL,
    EPOCH_END,
    FLOAT,
    KEYS,
    LOADED,
    MSG,
    SAVED,
    SAVING,
    TRAIN_EPOCH,
    GlobLayout,
)


def as_the_trainer_globs(path: Path) -> Path:
    """`./logs/<model>/<name>`: VITS globs and digit-sorts this relative path, so the
    digits (and glob metacharacters) of wherever the run directory lives take no part."""
    return Path(".", "logs", path.parent.name, path.name)


def _layout(options: AdapterOptions) -> GlobLayout:
    return GlobLayout(
        roles=("G", "D"),
        required_keys=KEYS,
        steps_from_epochs=True,
        not_resume_points=(
            (r"pretrained_\w+\.pth", "a released pretrained VITS model (for inference), not a resume point"),
        ),
        load_order=("G", "D"),
        keeps_partial=True,
        spell=as_the_trainer_globs,
        param_group_keys=("initial_lr",),
    )


def _recognise(path: Path) -> bool:
    path = path.absolute()
    m = re.fullmatch(r"[GD]_(\d+)\.pth", path.name)
    return (
        m is not None
        and int(m[1]) != 2333333  # Applio's "save only latest" number
        and path.parent.parent.name == "logs"
        and not path.parent.name.startswith("logs_s2")  # GPT-SoVITS
        and not any((path.parent / name).exists() for name in APPLIO_MARKERS)
    )


def _checkpoint_dir(argv: Sequence[str]) -> str | None:
    model = flag_value(argv, "-m", "--model")
    return f"logs/{model}" if model else None


ADAPTER = TrainerAdapter(
    name="vits",
    summary="VITS (jaywalnut310/vits train.py / train_ms.py): logs/<model>/G_<step>.pth + D_<step>.pth",
    options=AdapterOptions,
    layout=_layout,
    recognise=_recognise,
    lines=(
        TRAIN_EPOCH,
        # [loss_disc, loss_gen, loss_fm, loss_mel, loss_dur, loss_kl, global_step, lr]
        LineRule(Said.LOSS, MSG + rf"\[(?P<losses>{FLOAT}(?:, {FLOAT}){{5}}), (?P<step>\d+), {FLOAT}\]$"),
        LOADED,
        SAVING,
        SAVED,
        EPOCH_END,
        # No FRESH_START rule: the fallback prints nothing, and what follows it (`Train
        # Epoch: 1 [0%]`, a loss list at step 0) is exactly what a resume from a
        # checkpoint of epoch 1 prints too.
        LineRule(
            Said.FATAL,
            r"port must have value from 0 to 65535 but was 80000",
            "VITS's train.py hard-codes MASTER_PORT='80000', which is not a TCP port; recent torch refuses "
            "it, and the script overwrites any MASTER_PORT you set. Patch main() in train.py (and "
            "train_ms.py) to use a valid port, e.g. os.environ.get('MASTER_PORT', '29500'), or use a "
            "fork that does.",
        ),
        LineRule(
            Said.FATAL,
            r"CPU training is not allowed",
            "VITS found no CUDA GPU (torch.cuda.is_available() is False): check the driver, the CUDA "
            "build of torch and CUDA_VISIBLE_DEVICES.",
        ),
        LineRule(
            Said.FATAL,
            r"Distributed package doesn't have NCCL built in",
            "VITS always uses the NCCL backend, which this torch (e.g. on Windows) lacks: run on Linux/WSL "
            "or patch init_process_group(backend='nccl') in train.py to 'gloo'.",
        ),
        LineRule(
            Said.FATAL,
            r"No module named 'monotonic_align\.monotonic_align'",
            "The monotonic_align extension is not built: cd monotonic_align && python setup.py "
            "build_ext --inplace",
        ),
        LineRule(
            Said.FATAL,
            DISK_FULL,
            "A checkpoint could not be written (the disk is full or failing): free space where "
            "logs/<model>/ lives, then start the run again.",
        ),
    ),
    launch=LaunchHints(
        example="python train.py -c configs/ljs_base.json -m ljs_base",
        cwd=".",
        checkpoint_dir=_checkpoint_dir,
    ),
    exit_codes_trusted=True,
    fp16_loss_scaling=True,  # "fp16_run": true in the shipped configs
    # Its checkpoints count epochs (the `iteration` inside), and so do its progress lines.
    position_unit="epoch",
    config_files=config_flag("-c", "--config"),  # (train.py copies it over logs/<model>/config.json)
    # It resumes at the start of D's epoch (global_step = (epoch - 1) * len(train_loader)).
    first_epoch_after_resume=0,
    docs="docs/trainers/vits.md",
)
