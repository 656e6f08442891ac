"""`f5-tts`: F5-TTS (`src/f5_tts/train/train.py` or `finetune_cli.py`), `Trainer.load_checkpoint`.

Checkpoints are in `ckpts/<name>/` (finetune_cli: `ckpts/<dataset_name>`): `model_last.pt`, rewritten in
place every `last_per_updates`, and `model_<update>.pt` every `save_per_updates`. On start the trainer
takes `model_last.pt` whenever it exists; else the max of the other `model_*` (.pt and .safetensors) by
`int(all digits of the file name)` (ties: the last listed), which raises on a name without digits; else
the first `pretrained_*` (EMA weights only: a fresh start at update 0); else nothing. A file without
`update` (or the old `step`) key restarts at update 0 silently; one holding both resumes from `step`
(divided by grad_accumulation_steps); one that does not load crashes the run, and every relaunch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

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
from trainer_adapters.rules import NamePattern, all_digits, compiled, flag_value, ignored_by, max_by

LAST = NamePattern(r"model_last\.pt", in_place=True)
# Every name the trainer's digit sort looks at; the step is that sort's key.
NUMBERED = r"model_.*\.(?:pt|safetensors)"

IGNORED = (
    (
        r"pretrained_.*\.(?:pt|safetensors)",
        "pretrained EMA weights copied in by --finetune: the trainer "
        "starts from them at update 0 only when there is no model_* file; not a resume point",
    ),
    (r".+\.wav", "audio sample written with --log_samples"),
    (r".+\.(?:pt|safetensors)", "not model_* or pretrained_*: the trainer's resume rule never loads it"),
)


class F5Options(AdapterOptions):
    step_key: Literal["update|step", "update", "step"] = "update|step"
    """The key holding the update counter: `update`, or `step` in checkpoints of F5-TTS
    before v0.4.0 (January 2025); by default either is accepted, as the trainer does
    (`step` first, where a file holds both)."""


@dataclass(frozen=True)
class F5Layout(LayoutDefaults):
    options: F5Options
    roles: tuple[str, ...] = ("model",)
    recursive: bool = False  # os.listdir of the directory; Hydra's run dirs below it are not looked at

    def parse(self, path: Path) -> NamedCheckpoint | None:
        if (last := LAST.match(path)) is not None:
            return last
        if NamePattern(NUMBERED).match(path) is None:
            return None
        # model_<N>.safetensors or a pruned EMA-only model_<N>.pt would win the sort and restart at
        # update 0: parsed so the validator sees (and rejects) them.
        return NamedCheckpoint(path, "model", all_digits(path.name))

    def ignored(self, path: Path) -> str | None:
        return None if self.parse(path) is not None else ignored_by(IGNORED, path)

    def expect(self, ckpt: NamedCheckpoint) -> Expectations:
        keys = ("model_state_dict", "optimizer_state_dict", "ema_model_state_dict", "scheduler_state_dict")
        # Where a file holds both, the trainer takes `step` (its load checks "step" first).
        step_key = "step|update" if self.options.step_key == "update|step" else self.options.step_key
        return Expectations(required_keys=keys, step_key=step_key, model_key="model_state_dict")

    def pick(self, files: Sequence[NamedCheckpoint]) -> dict[str, NamedCheckpoint]:
        last = [f for f in files if f.in_place]
        if last:
            return {"model": last[0]}
        numbered = max_by(
            [f for f in files if f.role == "model"],
            lambda f: all_digits(f.path.name),
            "a model_* file name without digits: the trainer's sort raises ValueError (int(''))",
        )
        return {"model": numbered} if numbered is not None else {}


def recognise(path: Path) -> bool:
    """The trainer's own names, in `ckpts/<name>/` (where both entry points put them by default)."""
    named = compiled(r"model_(?:last|\d+)\.pt").fullmatch(path.name) is not None
    return named and path.parent.parent.name == "ckpts"


def checkpoint_dir(argv: Sequence[str]) -> str | None:
    if any(arg.endswith(("finetune_cli.py", "f5-tts_finetune-cli", "finetune_cli")) for arg in argv):
        return f"ckpts/{flag_value(argv, '--dataset_name') or 'Emilia_ZH_EN'}"
    for arg in argv:  # train.py: a Hydra override of ckpts.save_dir
        if arg.lstrip("+").startswith("ckpts.save_dir="):
            return arg.split("=", 1)[1]
    return None


# Both entry points write to files("f5_tts").joinpath(f"../../{save_dir}"): below the
# package root (<venv>/lib/pythonX.Y for a pip install, the repo for an editable one),
# whatever the cwd; pathlib folds the "//" of an absolute save_dir, so "/srv/x" lands in
# <root>/srv/x. train.py's save_dir is a Hydra key (an override, else the composed
# config's, whose default interpolates model and dataset names); finetune_cli's is
# ckpts/<dataset_name>. Run by the trainer's interpreter; f5_tts itself is never
# imported (find_spec only locates it), Hydra only where the config must be composed.
CHECKPOINT_DIR_PROBE = """
import importlib.util, json, os, sys

def flag(argv, *names):
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                return argv[i + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None

def save_dir(argv, package, root):
    if any(a.endswith(("finetune_cli.py", "f5-tts_finetune-cli", "finetune_cli")) for a in argv):
        return "ckpts/" + (flag(argv, "--dataset_name") or "Emilia_ZH_EN")
    overrides = [a for a in argv if not a.startswith("-") and "=" in a and a.lstrip("+~")[:1].isalpha()]
    for override in overrides:
        if override.lstrip("+").startswith("ckpts.save_dir="):
            return override.split("=", 1)[1]
    name = flag(argv, "--config-name", "-cn")
    if name is None:
        raise LookupError("no --config-name and no ckpts.save_dir= override in the command")
    # train.py chdirs to the root at import, before Hydra reads -cd; Hydra searches the
    # decorator's config_path (the package's configs) before a --config-dir.
    config_dir = flag(argv, "--config-dir", "-cd")
    extra = os.path.join(root, config_dir) if config_dir else None
    dirs = [d for d in (os.path.join(package, "configs"), extra) if d]
    found = [d for d in dirs if os.path.isfile(os.path.join(d, name.removesuffix(".yaml") + ".yaml"))]
    if not found:
        raise LookupError("config " + name + " is in none of " + ", ".join(dirs))
    try:
        from hydra import compose, initialize_config_dir
    except ImportError:
        raise LookupError("hydra is not installed for this interpreter, to read ckpts.save_dir") from None
    with initialize_config_dir(config_dir=os.path.abspath(found[0]), version_base="1.3"):
        config = compose(config_name=name.removesuffix(".yaml"), overrides=overrides)
    return str(config.ckpts.save_dir)

def main():
    argv = json.loads(sys.argv[1])
    spec = importlib.util.find_spec("f5_tts")
    if spec is None or not spec.submodule_search_locations:
        return {"error": "f5_tts is not installed for " + sys.executable}
    package = list(spec.submodule_search_locations)[0]
    root = os.path.realpath(os.path.join(package, "..", ".."))
    try:
        where = save_dir(argv, package, root)
    except Exception as exc:
        return {"error": "cannot tell ckpts.save_dir: " + str(exc)}
    return {"path": os.path.normpath(root + "/" + where), "package_root": root}

print(json.dumps(main()))
"""

LINES = (
    # tqdm on stderr: `Epoch 1/11:  20%|██  | 2/10 [00:00<00:00, 6.4update/s, loss=0.712, update=6]`;
    # some builds print `step=` (and count batches). NaN shows as `loss=nan`.
    LineRule(Said.PROGRESS, r"\bEpoch (?P<epoch>\d+)/\d+:.*[ ,](?:update|step)=(?P<step>\d+)\]"),
    LineRule(
        Said.LOSS,
        r"\bEpoch (?P<epoch>\d+)/\d+:.*\bloss=(?P<loss>[^,\]\s]+)(?:.*\b(?:update|step)=(?P<step>\d+))?",
    ),
    LineRule(Said.PROGRESS, r"^Saved last checkpoint at (?:update|step) (?P<step>\d+)"),
    LineRule(Said.SAVED, r"^Saved last checkpoint at (?:update|step) \d+"),
    LineRule(
        Said.FATAL,
        r"'AcceleratedOptimizer' object has no attribute '_modules'",
        "This F5-TTS does not work with accelerate 1.7 or later: it crashes at every checkpoint save "
        "(issues #1111, #1170). Update F5-TTS (fixed in efc7a74, July 2025) or pin accelerate==1.6.0.",
    ),
    LineRule(
        Said.FATAL,
        r"Error\(s\) in loading state_dict for (?:CFM|EMA)|size mismatch for \S+: copying",
        "The weights being loaded do not fit the model: another --exp_name (architecture) or another "
        "vocabulary (--tokenizer, --tokenizer_path) than the checkpoint was trained with. Every relaunch "
        "loads the same file; fix the command line (or move the file away yourself).",
    ),
)


def _layout(options: AdapterOptions) -> F5Layout:
    assert isinstance(options, F5Options)
    return F5Layout(options)


ADAPTER = TrainerAdapter(
    name="f5-tts",
    summary="F5-TTS: ckpts/<name>/model_last.pt (always preferred) and model_<update>.pt",
    options=F5Options,
    layout=_layout,
    recognise=recognise,
    lines=LINES,
    launch=LaunchHints(
        example="accelerate launch src/f5_tts/train/finetune_cli.py --exp_name F5TTS_v1_Base "
        "--dataset_name my_dataset --finetune",
        checkpoint_dir=checkpoint_dir,
        checkpoint_dir_probe=CHECKPOINT_DIR_PROBE,
    ),
    # Mixed precision is accelerate's choice (`accelerate config` / --mixed_precision), none by default.
    fp16_loss_scaling=False,
    docs="docs/trainers/f5-tts.md",
)
