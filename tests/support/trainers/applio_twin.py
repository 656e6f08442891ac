"""Layout twin of Applio's `rvc/train/train.py` (the argv `core.py train` builds), on CPU.

    python applio_twin.py MODEL SAVE_EVERY TOTAL_EPOCH PRETRAIN_G PRETRAIN_D GPUS BATCH_SIZE
        SAMPLE_RATE SAVE_ONLY_LATEST SAVE_EVERY_WEIGHTS CACHE_DATA_IN_GPU CLEANUP VOCODER
        CHECKPOINTING

Run from the "Applio root" (the cwd): the run's files are in `logs/MODEL/`, which must hold
`config.json` (else the fatal "Config file not found" line and exit 1) and `filelist.txt`
(one line per sample: batches per epoch = lines // BATCH_SIZE, at least 3, else the fatal
"Not enough data" line). A WAV in `logs/MODEL/sliced_audios/` at another rate than
SAMPLE_RATE is the fatal sample-rate error. The parent process starts one child (rank 0)
and exits 0 whatever the child does; the child ends with `os._exit(2333333)` (149) on
success. What the real trainer does and the twin does the same way:

- saves at the end of every SAVE_EVERY-th epoch: `G_<global step>.pth` then `D_...`, or
  `G_2333333.pth`/`D_2333333.pth` in place with SAVE_ONLY_LATEST; keys model, iteration
  (the epoch), optimizer, learning_rate, scaler; then, with SAVE_EVERY_WEIGHTS, the export
  `MODEL_<E>e_<S>s.pth` (weights only) unless that file exists; at the last epoch the
  completion line, the final export, and the exit;
- resume: probe the newest G (prints "Failed to load checkpoint: ..." when it cannot be
  loaded), then load the newest D, then the newest G, each by int(all digits of the full
  path); epoch = G's iteration + 1, global step = (epoch - 1) * batches. Any exception:
  silently epoch 1, from the pretrained G/D when given;
- CLEANUP "True" deletes every G_*/D_* .pth, *.0 and eval/ under logs/MODEL first.

Faults (faults.json in the cwd), "at" = the epoch, checked after its progress line:
"torn" cuts the G save of that epoch, "torn:D" the D save (after a good G), "nan" saves NaN
weights (and trains on with them), others as in twinlib (crash before the save); "at"
"start" with "fresh": the first resume from files fails inside its try (a silent restart
when no pretrained weights are given).
Seconds per batch: env APPLIO_TWIN_BATCH_S (default 0.05). Uses fork, not spawn, to spare
a second torch import; nothing about the files depends on it.
"""

from __future__ import annotations

import datetime
import glob
import json
import math
import multiprocessing
import os
import shutil
import sys
import time
import wave
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import torch
from twinlib import die, due_fault, load, poison, save, say, tiny_model, train_step

LEARNING_RATE = 1e-4
SENTINEL = 2333333


def strtobool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("y", "yes", "t", "true", "on", "1"):
        return True
    if lowered in ("n", "no", "f", "false", "off", "0"):
        return False
    raise ValueError(f"invalid truth value {text!r}")


def latest_checkpoint_path(dir_path: str, regex: str) -> str | None:
    checkpoints = sorted(
        glob.glob(os.path.join(dir_path, regex)), key=lambda f: int("".join(filter(str.isdigit, f)))
    )
    return checkpoints[-1] if checkpoints else None


def load_checkpoint(
    path: str | None, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[int, dict[str, Any]]:
    assert os.path.isfile(path), f"Checkpoint file not found: {path}"  # type: ignore[arg-type]
    assert path is not None
    saved = load(Path(path))
    current = model.state_dict()
    model.load_state_dict({k: saved["model"].get(k, v) for k, v in current.items()}, strict=False)
    optimizer.load_state_dict(saved.get("optimizer", {}))
    say(f"Loaded checkpoint '{path}' (epoch {saved['iteration']})")
    return int(saved["iteration"]), saved.get("scaler", {})


def save_checkpoint(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, epoch: int, path: str, torn: bool
) -> None:
    data = {
        "model": model.state_dict(),
        "iteration": epoch,
        "optimizer": optimizer.state_dict(),
        "learning_rate": LEARNING_RATE,
        "scaler": {},  # a disabled GradScaler's state (no fp16 on CPU)
    }
    save(data, Path(path), torn=torn)
    say(f"Saved model '{path}' (epoch {epoch})")


def export(model: torch.nn.Module, name: str, path: str, epoch: int, step: int) -> None:
    """`extract_model`: inference weights only (fp16), never a resume point."""
    if os.path.exists(path):
        return
    weights = {k: v.half() for k, v in model.state_dict().items()}
    info = {"epoch": epoch, "step": step, "sr": "40000", "f0": 1, "version": "v2", "model_name": name}
    save({"weight": weights, "config": [1025, 32, 192], **info}, Path(path))
    say(f"Saved model '{path}' (epoch {epoch} and step {step})")


def resume(
    args: dict[str, Any], experiment_dir: str, nets: list[Any], optims: list[Any]
) -> tuple[int, dict[str, Any]]:
    """The epoch to start from and D's GradScaler state: the probe, then D, then G; any
    error is a restart (silent without pretrained weights)."""
    (net_g, net_d), (optim_g, optim_d) = nets, optims
    scaler: dict[str, Any] = {}
    probe = latest_checkpoint_path(experiment_dir, "G_*.pth") or args["pretrain_g"]
    if probe:
        try:
            load(Path(probe))["model"]
            say("Initializing the generator with 1 speakers.")
        except Exception as exc:
            say(f"Failed to load checkpoint: {exc}. Using default number of speakers.")
    try:
        say("Starting training...")
        resuming = latest_checkpoint_path(experiment_dir, "D_*.pth") is not None
        if resuming and due_fault(Path.cwd(), "start") == "fresh":
            raise OSError("(twin) a resume that fails the way its except hides")
        _, scaler = load_checkpoint(latest_checkpoint_path(experiment_dir, "D_*.pth"), net_d, optim_d)
        epoch, _ = load_checkpoint(latest_checkpoint_path(experiment_dir, "G_*.pth"), net_g, optim_g)
        return epoch + 1, scaler
    except Exception:
        for role, net in (("G", net_g), ("D", net_d)):
            pretrained = args[f"pretrain_{role.lower()}"]
            if pretrained not in ("", "None"):
                say(f"Loaded pretrained ({role}) '{pretrained}'")
                net.load_state_dict(load(Path(pretrained))["model"])
        return 1, scaler


def run(args: dict[str, Any], experiment_dir: str, batches: int) -> None:
    """Rank 0."""
    root = Path.cwd()
    net_g, net_d = tiny_model(1), tiny_model(2)
    optim_g = torch.optim.AdamW(net_g.parameters(), LEARNING_RATE)
    optim_d = torch.optim.AdamW(net_d.parameters(), LEARNING_RATE)
    epoch_str, scaler_dict = resume(args, experiment_dir, [net_g, net_d], [optim_g, optim_d])
    # As Applio does, outside its try: the schedulers (last_epoch = epoch - 2: param groups
    # need `initial_lr`) and D's GradScaler state when there is one (fp16 on a GPU; the
    # twin's CPU scaler is on exactly when a state was saved).
    schedulers = [
        torch.optim.lr_scheduler.ExponentialLR(optim, gamma=0.999875, last_epoch=epoch_str - 2)
        for optim in (optim_g, optim_d)
    ]
    if len(scaler_dict) > 0:
        torch.amp.GradScaler("cpu", enabled=True).load_state_dict(scaler_dict)
    global_step = (epoch_str - 1) * batches
    batch_s = float(os.environ.get("APPLIO_TWIN_BATCH_S", "0.05"))
    lowest = {"value": math.inf, "epoch": 0, "step": 0}
    loss = math.nan
    model_name, total = args["model_name"], args["total_epoch"]
    for epoch in range(epoch_str, total + 1):
        started = time.monotonic()
        for _ in range(batches):
            loss = train_step(net_g, optim_g)
            train_step(net_d, optim_d)
            global_step += 1
            if loss < lowest["value"]:
                lowest = {"value": loss, "epoch": epoch, "step": global_step}
            time.sleep(batch_s)
        for scheduler in schedulers:
            scheduler.step()
        elapsed = datetime.timedelta(seconds=int(time.monotonic() - started))
        record = f"{model_name} | epoch={epoch} | step={global_step} | time={time.strftime('%H:%M:%S')}"
        record += f" | training_speed={elapsed}"
        if epoch > 1:
            record += f" | lowest_value={round(lowest['value'], 3)} (epoch {lowest['epoch']} and step {lowest['step']})"
        say(record)

        fault = due_fault(root, epoch)
        if fault == "nan":
            poison(net_g)
            poison(net_d)
        elif fault not in ("torn", "torn:D"):
            die(fault)
        if epoch % args["save_every_epoch"] == 0:
            suffix = f"{SENTINEL if args['save_only_latest'] else global_step}.pth"
            save_checkpoint(
                net_g, optim_g, epoch, os.path.join(experiment_dir, "G_" + suffix), fault == "torn"
            )
            save_checkpoint(
                net_d, optim_d, epoch, os.path.join(experiment_dir, "D_" + suffix), fault == "torn:D"
            )
            if args["save_every_weights"]:
                name = f"{model_name}_{epoch}e_{global_step}s.pth"
                export(net_g, model_name, os.path.join(experiment_dir, name), epoch, global_step)
        if epoch >= total:
            say(
                f"Training has been successfully completed with {epoch} epoch, {global_step} steps"
                f" and {round(loss, 3)} loss gen."
            )
            say(
                f"Lowest generator loss: {round(lowest['value'], 3)} at epoch {lowest['epoch']}, step {lowest['step']}"
            )
            name = f"{model_name}_{epoch}e_{global_step}s.pth"
            export(net_g, model_name, os.path.join(experiment_dir, name), epoch, global_step)
            os._exit(SENTINEL)
    # A finished run relaunched: the epoch loop is empty; the child just ends.


def cleanup(experiment_dir: str) -> None:
    say("Removing files from the prior training attempt...")
    for root, dirs, files in os.walk(experiment_dir, topdown=False):
        for name in files:
            stem, ext = os.path.splitext(name)
            if ext == ".0" or (stem.startswith(("G_", "D_")) and ext == ".pth"):
                os.remove(os.path.join(root, name))
        if "eval" in dirs:
            shutil.rmtree(os.path.join(root, "eval"))
    say("Cleanup done!")


def main(argv: list[str]) -> None:
    args: dict[str, Any] = {
        "model_name": argv[1],
        "save_every_epoch": int(argv[2]),
        "total_epoch": int(argv[3]),
        "pretrain_g": argv[4],
        "pretrain_d": argv[5],
        "gpus": argv[6],
        "batch_size": int(argv[7]),
        "sample_rate": int(argv[8]),
        "save_only_latest": strtobool(argv[9]),
        "save_every_weights": strtobool(argv[10]),
        "cache_data_in_gpu": strtobool(argv[11]),
        "cleanup": strtobool(argv[12]),
        "vocoder": argv[13],
        "checkpointing": strtobool(argv[14]),
    }
    experiment_dir = os.path.join(os.getcwd(), "logs", args["model_name"])
    config_path = os.path.join(experiment_dir, "config.json")
    if not os.path.exists(config_path):
        say(
            f"Config file not found at {config_path}. Did you run preprocessing and feature extraction steps?"
        )
        sys.exit(1)
    json.loads(Path(config_path).read_text())
    wavs = sorted(glob.glob(os.path.join(experiment_dir, "sliced_audios", "*.wav")))
    if wavs:
        with wave.open(wavs[0]) as w:
            sr = w.getframerate()
        if sr != args["sample_rate"]:
            say(
                f"Error: Pretrained model sample rate ({args['sample_rate']} Hz) does not match"
                f" dataset audio sample rate ({sr} Hz)."
            )
            os._exit(1)
    else:
        say("No wav file found.")
    if args["cleanup"]:
        cleanup(experiment_dir)
    say("Training with CPU, this will take a long time.")

    def child() -> None:
        lines = Path(experiment_dir, "filelist.txt").read_text().splitlines()
        batches = len([line for line in lines if line.strip()]) // args["batch_size"]
        if batches < 3:
            say(
                "Not enough data present in the training set. Perhaps you forgot to slice the audio files in preprocess?"
            )
            os._exit(SENTINEL)
        run(args, experiment_dir, batches)

    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    process.join()  # the exit code is never looked at


if __name__ == "__main__":
    main(sys.argv)
