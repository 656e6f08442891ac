"""Layout twin of VITS (jaywalnut310/vits `train.py` with `utils.py`), on CPU.

    python vits_twin.py -c configs/twin.json -m MODEL

Run from the "repo root" (the cwd): the run's files are in `./logs/MODEL/`. The config is
VITS's JSON (`train.epochs`, `eval_interval`, `log_interval`, `learning_rate`, `betas`,
`eps`, `lr_decay`) plus a `twin` section: `batches_per_epoch` (len(train_loader)) and
`step_s` (seconds per batch). What the real trainer does and the twin does the same way:

- copies the -c file to logs/MODEL/config.json; logs to stdout as `INFO:MODEL:...`
  (logging.basicConfig on stdout) and to logs/MODEL/train.log (tab separated);
- resume: `latest_checkpoint_path` globs `G_*.pth`, sorts by int(all digits of the path),
  prints the last, loads it (with optim_g); the same for `D_*.pth`; epoch = D's
  `iteration`, global step = (epoch - 1) * batches_per_epoch (the epoch is repeated;
  relaunched with another batches_per_epoch, newer epochs get lower numbers). A bare
  `except:` around all of it: any error means epoch 1, step 0, silently (with G still
  loaded when only D failed). Then, outside it, ExponentialLR(last_epoch=epoch - 2) per
  optimizer (stepped at each epoch end), which needs `initial_lr` in the loaded groups;
- every `log_interval` global steps: `Train Epoch: E [P%]` and the loss list
  `[d, g, fm, mel, dur, kl, global_step, lr]`; every `eval_interval` steps (step 0 too):
  `G_<step>.pth` then `D_<step>.pth`, plain torch.save onto the name, keys model,
  iteration (the epoch), optimizer, learning_rate; `====> Epoch: E` at each epoch end;
  exit 0 after the last epoch, with no message.

Faults (faults.json in the cwd): "at" an int N = at global step N, before the batch
("nan" poisons both nets, so the losses print nan and the next saves hold NaN;
"nanloss" makes the printed losses nan from then on while the weights stay finite, so
later saves look good; others as in twinlib); "at" "G_N" or "D_N" = at the save of that
file ("torn" cuts it half-way and dies, "sigkill" dies before writing it); "at" "start"
with "fresh" = the resume fails the way its bare except hides (a silent fresh start).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import torch
import vits_utils
from twinlib import die, due_fault, load, poison, save, tiny_model, train_step
from vits_utils import latest_checkpoint_path

logging.basicConfig(stream=sys.stdout, level=logging.DEBUG)
logger: Any = logging
NAN_LOSSES: list[int] = []  # where printed losses went nan (the "nanloss" fault)


def get_hparams() -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    parser.add_argument("-c", "--config", type=str, default="./configs/base.json")
    parser.add_argument("-m", "--model", type=str, required=True)
    args = parser.parse_args()
    model_dir = os.path.join("./logs", args.model)
    os.makedirs(model_dir, exist_ok=True)
    data = Path(args.config).read_text()
    Path(model_dir, "config.json").write_text(data)
    hps: dict[str, Any] = json.loads(data)
    hps["model_dir"] = model_dir
    return hps


def get_logger(model_dir: str) -> logging.Logger:
    global logger
    logger = vits_utils.get_logger(model_dir, logging.DEBUG)
    return logger


def load_checkpoint(path: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    assert os.path.isfile(path)
    checkpoint = load(Path(path))
    iteration: int = checkpoint["iteration"]
    checkpoint["learning_rate"]  # read (and so required) like the real load_checkpoint
    optimizer.load_state_dict(checkpoint["optimizer"])
    saved = checkpoint["model"]
    new_state = {}
    for k, v in model.state_dict().items():
        try:
            new_state[k] = saved[k]
        except KeyError:
            logger.info(f"{k} is not in the checkpoint")
            new_state[k] = v
    model.load_state_dict(new_state)
    logger.info(f"Loaded checkpoint '{path}' (iteration {iteration})")
    return iteration


def save_checkpoint(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, learning_rate: float, iteration: int, path: str
) -> None:
    logger.info(f"Saving model and optimizer state at iteration {iteration} to {path}")
    fault = due_fault(Path.cwd(), Path(path).stem)
    if fault == "sigkill":
        die(fault)
    state = {
        "model": model.state_dict(),
        "iteration": iteration,
        "optimizer": optimizer.state_dict(),
        "learning_rate": learning_rate,
    }
    save(state, Path(path), torn=fault == "torn")


def run(hps: dict[str, Any]) -> None:
    train, model_dir = hps["train"], hps["model_dir"]
    log = get_logger(model_dir)
    log.info(hps)
    if "PYTORCH_CUDA_ALLOC_CONF" in os.environ:  # (twin) shows what a relaunch runs with
        log.info(f"PYTORCH_CUDA_ALLOC_CONF={os.environ['PYTORCH_CUDA_ALLOC_CONF']}")
    nets = [tiny_model(0), tiny_model(1)]
    optims = [
        torch.optim.AdamW(net.parameters(), train["learning_rate"], betas=train["betas"], eps=train["eps"])
        for net in nets
    ]
    batches = hps["twin"]["batches_per_epoch"]
    try:
        if due_fault(Path.cwd(), "start") == "fresh":
            raise OSError("(twin) a G file that cannot be read")
        epoch_str = load_checkpoint(latest_checkpoint_path(model_dir, "G_*.pth"), nets[0], optims[0])
        epoch_str = load_checkpoint(latest_checkpoint_path(model_dir, "D_*.pth"), nets[1], optims[1])
        global_step = (epoch_str - 1) * batches
    except:  # noqa: E722  (the real trainer's bare except: a silent fresh start)
        epoch_str = 1
        global_step = 0
    # As VITS does: outside the try, so an optimizer state without `initial_lr` in its
    # param groups (last_epoch != -1) crashes here, at every relaunch.
    schedulers = [
        torch.optim.lr_scheduler.ExponentialLR(optim, gamma=train["lr_decay"], last_epoch=epoch_str - 2)
        for optim in optims
    ]
    for epoch in range(epoch_str, train["epochs"] + 1):
        global_step = train_and_evaluate(hps, epoch, global_step, nets, optims)
        for scheduler in schedulers:
            scheduler.step()


def train_and_evaluate(
    hps: dict[str, Any],
    epoch: int,
    global_step: int,
    nets: list[torch.nn.Module],
    optims: list[torch.optim.Optimizer],
) -> int:
    train, batches = hps["train"], hps["twin"]["batches_per_epoch"]
    lr = optims[0].param_groups[0]["lr"]
    for batch_idx in range(batches):
        fault = due_fault(Path.cwd(), global_step)
        if fault == "nan":
            for net in nets:
                poison(net)
        elif fault == "nanloss":
            NAN_LOSSES.append(global_step)
        else:
            die(fault)
        loss_d = train_step(nets[1], optims[1])
        loss_g = train_step(nets[0], optims[0])
        if NAN_LOSSES:
            loss_d = loss_g = float("nan")
        if global_step % train["log_interval"] == 0:
            losses = [loss_d, loss_g, loss_g / 2, loss_g * 45, loss_g / 10, loss_g / 5]
            logger.info(f"Train Epoch: {epoch} [{100.0 * batch_idx / batches:.0f}%]")
            logger.info([*losses, global_step, lr])
        if global_step % train["eval_interval"] == 0:
            for net, optim, role in zip(nets, optims, "GD", strict=True):
                path = os.path.join(hps["model_dir"], f"{role}_{global_step}.pth")
                save_checkpoint(net, optim, train["learning_rate"], epoch, path)
        global_step += 1
        time.sleep(hps["twin"]["step_s"])
    logger.info(f"====> Epoch: {epoch}")
    return global_step


if __name__ == "__main__":
    run(get_hparams())
