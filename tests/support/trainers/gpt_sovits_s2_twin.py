"""Layout twin of GPT-SoVITS stage 2: `GPT_SoVITS/s2_train.py` (v1/v2/v2Pro/v2ProPlus: G
and D) and `s2_train_v3_lora.py` (v3/v4: G only), with `utils.py`, on CPU.

    python gpt_sovits_s2_twin.py --config TEMP/tmp_s2.json

Run from the "repo root" (the cwd). The config is what the WebUI writes: `train.epochs`,
`save_every_epoch`, `if_save_latest`, `if_save_every_weights`, `pretrained_s2G`/`_s2D`,
`lora_rank`, `log_interval`, `learning_rate`, `betas`, `eps`, `lr_decay`,
`data.exp_dir` ("logs/<exp>"), `s2_ckpt_dir`, `model.version`, `name`,
`save_weight_dir`, plus a `twin` section: `batches_per_epoch` and `step_s`. A missing key
is an AttributeError of HParams, as in the real one. The same as the real trainer:

- the directory is `<exp_dir>/logs_s2_<version>`, or `..._lora_<rank>` for v3/v4 (G only);
- resume: the newest `D_*.pth` by int(all digits of the path) (printed, loaded, "loaded
  D"), then the newest `G_*.pth`; epoch = G's `iteration` + 1, global step = (epoch - 1) *
  batches_per_epoch. A bare `except:`: epoch 1, step 0, the pretrained weights (key
  `weight`) if their files exist (`loaded pretrained <path>`, logged and printed);
- `start training from epoch N`; a tqdm-like bar on stderr; every `log_interval` steps
  `Train Epoch: E [P%]` and the loss list (8 entries, or `[cfm_loss, step, lr]` for
  v3/v4); at the end of every `save_every_epoch`-th epoch G then D as `G_<global step>.pth`,
  or in place as `G_233333333333.pth` with `if_save_latest`, each written to
  `<time.time()>.pth` in the cwd and moved onto the name; then the export
  `<save_weight_dir>/<name>_e<E>_s<S>[_l<rank>].pth` (keys weight, config, info; a version
  tag over the zip header for v2Pro, v2ProPlus, v3, v4); `====> Epoch: E`; at the end
  `training done` and exit 0.

Faults (faults.json in the cwd): "at" an int N = at global step N, before the batch
("nan" poisons the nets: nan losses, NaN saves; others as in twinlib); "at" "G@E" or
"D@E" = at that file's save at the end of epoch E: "torn" = the move is a copy (logs on
another filesystem, or Windows) cut half-way, then SIGKILL; "sigkill" = killed while
torch.save writes the temp file: an orphan `<time>.pth` stays in the cwd.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import torch
import vits_utils
from twinlib import die, due_fault, load, poison, save, tiny_model, train_step
from vits_utils import latest_checkpoint_path

logging.basicConfig(stream=sys.stdout, level=logging.INFO)
logger: Any = logging
SENTINEL = 233333333333
VERSION_TAGS = {"v2Pro": b"05", "v2ProPlus": b"06", "v3": b"03", "v4": b"04"}


class HParams:
    def __init__(self, **kwargs: Any) -> None:
        for k, v in kwargs.items():
            setattr(self, k, HParams(**v) if isinstance(v, dict) else v)

    def __repr__(self) -> str:
        return self.__dict__.__repr__()


def get_hparams() -> Any:
    parser = argparse.ArgumentParser()
    parser.add_argument("-c", "--config", type=str, default="./configs/s2.json")
    parser.add_argument("-p", "--pretrain", type=str, required=False, default=None)
    parser.add_argument("-rs", "--resume_step", type=int, required=False, default=None)
    args = parser.parse_args()
    data = Path(args.config).read_text()
    hps = HParams(**json.loads(data))
    os.makedirs(hps.s2_ckpt_dir, exist_ok=True)
    Path(hps.s2_ckpt_dir, "config.json").write_text(data)
    return hps


hps = get_hparams()
os.environ["CUDA_VISIBLE_DEVICES"] = hps.train.gpu_numbers.replace("-", ",")


def get_logger(model_dir: str) -> logging.Logger:
    global logger
    logger = vits_utils.get_logger(model_dir, logging.INFO)
    return logger


def load_checkpoint(path: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    assert os.path.isfile(path)
    checkpoint = load(Path(path))
    iteration: int = checkpoint["iteration"]
    checkpoint["learning_rate"]  # read (and so required) like the real load_checkpoint
    if checkpoint["optimizer"] is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
    saved = checkpoint["model"]
    new_state = {}
    for k, v in model.state_dict().items():
        try:
            new_state[k] = saved[k]
            assert saved[k].shape == v.shape, (saved[k].shape, v.shape)
        except (KeyError, AssertionError):
            print(f"error, {k} is not in the checkpoint", flush=True)
            new_state[k] = v
    model.load_state_dict(new_state)
    print("load ", flush=True)
    logger.info(f"Loaded checkpoint '{path}' (iteration {iteration})")
    return iteration


def my_save(fea: dict[str, Any], path: str) -> None:
    """torch.save to '<time>.pth' in the cwd, then shutil.move onto the name."""
    fault = due_fault(Path.cwd(), f"{Path(path).name[0]}@{fea['iteration']}")
    tmp_path = f"{time.time()}.pth"
    save(fea, Path(tmp_path), torn=fault == "sigkill")
    if fault == "torn":
        save(fea, Path(path), torn=True)  # the move as a copy, cut half-way
    shutil.move(tmp_path, path)


def save_checkpoint(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, learning_rate: float, iteration: int, path: str
) -> None:
    logger.info(f"Saving model and optimizer state at iteration {iteration} to {path}")
    state = {
        "model": model.state_dict(),
        "iteration": iteration,
        "optimizer": optimizer.state_dict(),
        "learning_rate": learning_rate,
    }
    my_save(state, path)


def savee(model: torch.nn.Module, name: str, epoch: int, steps: int, hps: Any) -> str:
    weights = {k: v.half() for k, v in model.state_dict().items()}
    info = {
        "weight": weights,
        "config": json.loads(json.dumps(hps, default=vars)),
        "info": f"{epoch}epoch_{steps}iteration",
    }
    if hps.model.version in ("v3", "v4"):
        info["lora_rank"] = hps.train.lora_rank
    buffer = io.BytesIO()
    torch.save(info, buffer)
    data = buffer.getvalue()
    tag = VERSION_TAGS.get(hps.model.version)
    os.makedirs(hps.save_weight_dir, exist_ok=True)
    Path(hps.save_weight_dir, f"{name}.pth").write_bytes(tag + data[2:] if tag else data)
    return "Success."


def pretrained(net: torch.nn.Module, path: str | None) -> None:
    if path and os.path.exists(path):
        logger.info(f"loaded pretrained {path}")
        print(f"loaded pretrained {path}", net.load_state_dict(load(Path(path))["weight"], strict=False))


def run(hps: Any) -> None:
    global logger
    logger = get_logger(hps.data.exp_dir)
    logger.info(hps)
    lora = hps.model.version in ("v3", "v4")
    if lora:
        save_root = f"{hps.data.exp_dir}/logs_s2_{hps.model.version}_lora_{hps.train.lora_rank}"
    else:
        save_root = f"{hps.data.exp_dir}/logs_s2_{hps.model.version}"
    os.makedirs(save_root, exist_ok=True)
    nets = [tiny_model(0)] if lora else [tiny_model(0), tiny_model(1)]
    optims = [
        torch.optim.AdamW(net.parameters(), hps.train.learning_rate, betas=hps.train.betas, eps=hps.train.eps)
        for net in nets
    ]
    batches = hps.twin.batches_per_epoch
    try:
        if not lora:
            load_checkpoint(latest_checkpoint_path(save_root, "D_*.pth"), nets[1], optims[1])
            logger.info("loaded D")
        epoch_str = load_checkpoint(latest_checkpoint_path(save_root, "G_*.pth"), nets[0], optims[0])
        epoch_str += 1
        global_step = (epoch_str - 1) * batches
    except:  # noqa: E722  (the real trainer's bare except: a silent fresh start)
        epoch_str = 1
        global_step = 0
        if lora:  # the LoRA script builds its model and optimizer afresh here
            nets[0] = tiny_model(0)
            optims[0] = torch.optim.AdamW(
                nets[0].parameters(), hps.train.learning_rate, betas=hps.train.betas, eps=hps.train.eps
            )
        pretrained(nets[0], hps.train.pretrained_s2G)
        if not lora:
            pretrained(nets[1], hps.train.pretrained_s2D)
    print(f"start training from epoch {epoch_str}", flush=True)
    for epoch in range(epoch_str, hps.train.epochs + 1):
        global_step = train_and_evaluate(hps, epoch, global_step, nets, optims, save_root)
    print("training done", flush=True)


def train_and_evaluate(
    hps: Any,
    epoch: int,
    global_step: int,
    nets: list[torch.nn.Module],
    optims: list[torch.optim.Optimizer],
    save_root: str,
) -> int:
    batches = hps.twin.batches_per_epoch
    lr = hps.train.learning_rate * hps.train.lr_decay**epoch  # stepped epoch_str times before the loop
    for optim in optims:
        for group in optim.param_groups:
            group["lr"] = lr
    for batch_idx in range(batches):
        print(
            f"\r{100 * batch_idx // batches:3d}%|   | {batch_idx}/{batches} [00:00<00:00]",
            end="",
            file=sys.stderr,
            flush=True,
        )
        fault = due_fault(Path.cwd(), global_step)
        if fault == "nan":
            for net in nets:
                poison(net)
        else:
            die(fault)
        losses = [train_step(net, optim) for net, optim in zip(nets, optims, strict=True)]
        if global_step % hps.train.log_interval == 0:
            if len(nets) == 2:
                g, d = losses
                losses = [d, g, g / 2, g * 45, g / 10, g / 5]
            logger.info(f"Train Epoch: {epoch} [{100.0 * batch_idx / batches:.0f}%]")
            logger.info([*losses, global_step, lr])
        global_step += 1
        time.sleep(hps.twin.step_s)
    print(file=sys.stderr, flush=True)
    if epoch % hps.train.save_every_epoch == 0:
        number = SENTINEL if hps.train.if_save_latest else global_step
        for net, optim, role in zip(nets, optims, "GD", strict=False):
            save_checkpoint(
                net, optim, hps.train.learning_rate, epoch, os.path.join(save_root, f"{role}_{number}.pth")
            )
        if hps.train.if_save_every_weights:
            rank = f"_l{hps.train.lora_rank}" if len(nets) == 1 else ""
            result = savee(nets[0], f"{hps.name}_e{epoch}_s{global_step}{rank}", epoch, global_step, hps)
            logger.info(f"saving ckpt {hps.name}_e{epoch}:{result}")
    logger.info(f"====> Epoch: {epoch}")
    return global_step


if __name__ == "__main__":
    run(hps)
