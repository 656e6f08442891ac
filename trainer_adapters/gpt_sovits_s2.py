"""`gpt-sovits-s2`: GPT-SoVITS stage 2, "SoVITS" (`GPT_SoVITS/s2_train.py`, and
`s2_train_v3_lora.py` / `s2_train_v3.py` for v3 and v4), run from the repo root.

`logs/<exp>/logs_s2_<version>/` holds `G_<n>.pth` and `D_<n>.pth`; v3/v4 hold G only
(`logs_s2_<v3|v4>_lora_<rank>/`, or `logs_s2_v3/` for a full v3 fine-tune). Saved at
epoch ends, G then D, through a temp `<time.time()>.pth` in the cwd moved onto the name.
With `if_save_latest` (the WebUI default) the name is the sentinel `G_233333333333.pth`,
rewritten in place; otherwise `n` is a global step the trainer recomputes on resume. So
progress is the content's `iteration` (the epoch): every step this adapter reports is
an epoch. On start: D then G, each the largest int of all digits in the path as the
trainer spells it (`logs/<exp>/logs_s2_<ver>/...`, relative to its cwd; the sentinel
always wins), epoch = G's iteration + 1; any error is swallowed (bare `except:`): a
silent start at epoch 1 from the pretrained weights, whose next save overwrites the
sentinel.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field

from trainer_adapters.base import AdapterOptions, LaunchHints, LineRule, Said, TrainerAdapter
from trainer_adapters.rules import config_flag
from trainer_adapters.vits_family import (
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

SENTINEL = 233333333333
DIRECTORY = re.compile(r"logs_s2(?:_v\d[A-Za-z]*)?(?:_lora_\d+)?")
NOT_RESUME_POINTS = (
    (
        r".+_e\d+_s\d+(?:_l\d+)?\.pth",
        "a SoVITS_weights export (inference only: fp16 weights, no optimizer, no D; v2Pro/v2ProPlus "
        "and LoRA exports have a version tag instead of the zip header), not a resume point",
    ),
    (
        r"s2[GD].*\.pth",
        "pretrained weights (key 'weight'): loaded only on a fresh start, not a resume point",
    ),
    (
        r"\d+(?:\.\d+)?\.pth",
        "an orphan temp file of a save (my_save writes '<time>.pth' in the cwd, then moves it): "
        "the save it belonged to never finished",
    ),
)


class GptSovitsS2Options(AdapterOptions):
    version: Literal["v1", "v2", "v2Pro", "v2ProPlus", "v3", "v4"] = Field(
        "v2Pro",
        description=(
            "The model version trained (the WebUI's `version`). v3 and v4 have no discriminator:\n"
            "their directory holds G files only. It must match the directory's name\n"
            "(logs_s2_<version>[_lora_<rank>]); a config where it does not is refused."
        ),
    )


def as_the_trainer_globs(path: Path) -> Path:
    """`"%s/logs_s2_%s" % (exp_dir, version)` with the WebUI's `exp_dir = "logs/<exp>"`:
    relative to the cwd, so the digits (and glob metacharacters) of wherever the repo
    lives take no part."""
    return Path("logs", path.parent.parent.name, path.parent.name, path.name)


def _layout(options: AdapterOptions) -> GlobLayout:
    assert isinstance(options, GptSovitsS2Options)
    roles = ("G",) if options.version in ("v3", "v4") else ("G", "D")
    return GlobLayout(
        roles=roles,
        required_keys=KEYS,
        sentinel=SENTINEL,
        steps_from_epochs=True,
        not_resume_points=NOT_RESUME_POINTS,
        load_order=tuple(reversed(roles)),  # D, then G
        spell=as_the_trainer_globs,
    )


def _check_dir(options: AdapterOptions, directory: Path) -> str | None:
    assert isinstance(options, GptSovitsS2Options)
    named = re.fullmatch(r"logs_s2_(v\d[A-Za-z]*)(?:_lora_\d+)?", directory.name)
    if named is None or named[1] == options.version:
        return None
    return (
        f"adapter.version: {options.version!r}, but {directory.name} holds a {named[1]} run: set "
        f'version = "{named[1]}" (v3/v4 save G only; the others G and D)'
    )


def _recognise(path: Path) -> bool:
    path = path.absolute()
    return re.fullmatch(r"[GD]_\d+\.pth", path.name) is not None and bool(
        DIRECTORY.fullmatch(path.parent.name)
    )


ADAPTER = TrainerAdapter(
    name="gpt-sovits-s2",
    summary="GPT-SoVITS stage 2 (SoVITS): logs/<exp>/logs_s2_<ver>[_lora_<rank>]/G_*.pth (+ D_*.pth); steps are epochs",
    options=GptSovitsS2Options,
    layout=_layout,
    recognise=_recognise,
    check_dir=_check_dir,
    lines=(
        TRAIN_EPOCH,
        # [loss_disc, loss_gen, loss_fm, loss_mel, kl_ssl, loss_kl, global_step, lr], or
        # [cfm_loss, global_step, lr] for v3/v4. Its global step is not what this
        # adapter calls a step (the epoch), so it is not read.
        LineRule(Said.LOSS, MSG + rf"\[(?P<losses>{FLOAT}(?:, {FLOAT}){{5}}|{FLOAT}), \d+, {FLOAT}\]$"),
        LOADED,
        # Printed on every start; epoch 1 only when nothing was loaded (a resume starts at
        # G's epoch + 1 >= 2). `loaded pretrained <path>` comes with it when pretrained
        # weights exist, several times over (logged and printed, for G and for D).
        LineRule(Said.FRESH_START, r"^start training from epoch 1$"),
        SAVING,
        SAVED,
        EPOCH_END,
        LineRule(Said.COMPLETED, r"^training done$"),
        LineRule(
            Said.FATAL,
            r"'HParams' object has no attribute '\w+'",
            "The training config lacks a key the WebUI injects (train.gpu_numbers, data.exp_dir, "
            "model.version, train.if_save_latest, ...): run with the config the WebUI writes "
            "(TEMP/tmp_s2.json; copy it per run, the WebUI overwrites and deletes it), not the bare "
            "GPT_SoVITS/configs/s2*.json.",
        ),
        LineRule(
            Said.FATAL,
            r"Unsupported global: GLOBAL utils\.HParams",
            "torch >= 2.6 loads with weights_only=True by default, and this GPT-SoVITS version does "
            "not ask otherwise for the pretrained weights (they hold a utils.HParams): update GPT-SoVITS "
            "or install torch < 2.6.",
        ),
        LineRule(
            Said.FATAL,
            DISK_FULL,
            "A checkpoint could not be written (the disk is full or failing): free space in the cwd "
            "(where the temp file is written first) and under logs/, then start the run again.",
        ),
    ),
    launch=LaunchHints(
        example="python -s GPT_SoVITS/s2_train.py --config TEMP/tmp_s2.json",
        cwd=".",
        checkpoint_dir=None,  # data.exp_dir and model.version are in the JSON config, not in argv
    ),
    exit_codes_trusted=True,
    fp16_loss_scaling=True,  # train.fp16_run is true in s2.json (the WebUI sets it false without half precision)
    position_unit="epoch",
    # epoch = G's iteration + 1 since February 2025 (aa07216); before, the saved epoch
    # itself: only what holds for both (not below the saved epoch) tells a fresh start.
    first_epoch_after_resume=0,
    config_files=config_flag("-c", "--config"),
    docs="docs/trainers/gpt-sovits-s2.md",
)
