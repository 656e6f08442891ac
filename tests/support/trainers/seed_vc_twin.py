"""Layout twin of Seed-VC fine-tuning: V1 `train.py`, and with --v2 `train_v2.py`.

It saves, prunes, resumes and prints as the real scripts do (Plachtaa/seed-vc d334fb7):
- V1: dir `<config log_dir>/<run-name>` (log_dir "./runs" without --config; the config is
  read as JSON, which is YAML too). After each optimizer step `iters += 1`; at
  `iters >= max_steps` it stops before saving; every `save_every` it prints `Saving..` and
  writes `DiT_epoch_{epoch:05d}_step_{iters:05d}.pth`, then keeps the 2 highest of
  `DiT_epoch_*.pth`. At start (no --pretrained-ckpt) the max of `DiT_epoch_*_step_*.pth`,
  removing the min first when more than 2 exist. Weights only: epoch and iters restart at 0.
  At the end `ft_model.pth` ({"net"} only) and `Final model saved at <path>`.
- V2 (--v2): dir `runs/<run-name>`. The save check (`iters != 0 and iters % save_every == 0`)
  comes before `iters += 1`; AR is saved before CFM, each followed by keep-1 pruning. At
  start, for CFM then AR: the max by step, removing the min first when more than 1 exist.
  At max steps it prints `Reached max steps, stopping training`, saves once more, exits 0.

Both sort by `int(path.split("_")[-1].split(".")[0])`, and load with no fallback: a bad file
is a traceback and exit 1. twin-only flags: --batches (batches per epoch), --step-time.

Faults (runs/<run-name>/faults.json) fire at the step a save of that step would carry: V1
just after `iters += 1`, V2 just before. torn cuts the last file of that save.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import torch
import twinlib


def key(path: str) -> int:
    return int(path.split("_")[-1].split(".")[0])


class Part:
    """One trained module with its optimizer and LR schedule."""

    def __init__(self, seed: int) -> None:
        self.module = twinlib.tiny_model(seed)
        self.optimizer = torch.optim.AdamW(self.module.parameters(), lr=1e-2)
        self.scheduler = torch.optim.lr_scheduler.ExponentialLR(self.optimizer, gamma=0.999996)

    def step(self) -> tuple[float, float]:
        x = torch.linspace(-1, 1, 16).reshape(8, 2)
        loss = torch.nn.functional.mse_loss(self.module(x), x * 2 + 1)
        self.optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        norm = float(torch.nn.utils.clip_grad_norm_(self.module.parameters(), 1000.0))
        self.optimizer.step()
        self.scheduler.step()
        return float(loss.item()), norm


def load_into(parts: dict[str, Part], net: dict[str, Any], names: dict[str, str]) -> None:
    for name, stored in names.items():
        if stored in net:
            parts[name].module.load_state_dict(net[stored], strict=False)


# --- V1 train.py ------------------------------------------------------------------------


class V1:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        config = json.loads(Path(args.config).read_text()) if args.config else {}
        self.log_dir = os.path.join(config.get("log_dir", "./runs"), args.run_name)
        os.makedirs(self.log_dir, exist_ok=True)
        if args.config:
            shutil.copyfile(args.config, os.path.join(self.log_dir, os.path.basename(args.config)))
        self.log_interval = config.get("log_interval", 10)
        self.model = {"cfm": Part(0), "length_regulator": Part(1)}
        latest = self.find(config) if args.pretrained_ckpt is None else self.given(args.pretrained_ckpt)
        if os.path.exists(latest):
            net = twinlib.load(Path(latest))["net"]
            for name in self.model:
                if name in net:
                    print(f"{name} loaded")
            load_into(self.model, net, {name: name for name in self.model})
            print(f"Loaded checkpoint from {latest}")
        else:
            print("Failed to load any checkpoint, training from scratch.")
        self.epoch, self.iters = 0, 0  # weights only

    def find(self, config: dict[str, Any]) -> str:
        found = glob.glob(os.path.join(self.log_dir, "DiT_epoch_*_step_*.pth"))
        if not found:
            return str(config.get("pretrained_model", ""))  # the real one downloads it from HF
        latest, earliest = max(found, key=key), min(found, key=key)
        if earliest != latest and len(found) > 2:
            os.remove(earliest)
            print(f"Removed {earliest}")
        return latest

    @staticmethod
    def given(path: str) -> str:
        assert os.path.exists(path), f"Pretrained checkpoint {path} not found"
        return path

    def train(self) -> None:
        self.ema = 0.0
        for epoch in range(self.args.max_epochs):
            self.epoch = epoch
            self.train_one_epoch()
            if self.iters >= self.args.max_steps:
                break
        print("Saving final model..")
        path = os.path.join(self.log_dir, "ft_model.pth")
        twinlib.save(
            {"net": {name: part.module.state_dict() for name, part in self.model.items()}}, Path(path)
        )
        print(f"Final model saved at {path}")

    def train_one_epoch(self) -> None:
        for _ in range(self.args.batches):
            time.sleep(self.args.step_time)
            loss = self.model["cfm"].step()[0]
            self.model["length_regulator"].step()
            self.ema = self.ema * 0.99 + loss * 0.01 if self.iters > 0 else loss
            if self.iters % self.log_interval == 0:
                print(f"epoch {self.epoch}, step {self.iters}, loss: {self.ema}")
            self.iters += 1
            fault = fault_at(self.log_dir, self.iters, self.model)
            if self.iters >= self.args.max_steps:
                break
            if self.iters % self.args.save_every == 0:
                self.save(torn=fault == "torn")

    def save(self, *, torn: bool) -> None:
        print("Saving..")
        state = {
            "net": {name: part.module.state_dict() for name, part in self.model.items()},
            "optimizer": [(name, part.optimizer.state_dict()) for name, part in self.model.items()],
            "scheduler": [(name, part.scheduler.state_dict()) for name, part in self.model.items()],
            "iters": self.iters,
            "epoch": self.epoch,
        }
        path = os.path.join(self.log_dir, f"DiT_epoch_{self.epoch:05d}_step_{self.iters:05d}.pth")
        twinlib.save(state, Path(path), torn=torn)
        kept = glob.glob(os.path.join(self.log_dir, "DiT_epoch_*.pth"))
        if len(kept) > 2:
            kept.sort(key=key)
            for old in kept[:-2]:
                os.remove(old)


# --- V2 train_v2.py -----------------------------------------------------------------------


class V2:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.log_dir = os.path.join("runs", args.run_name)
        os.makedirs(self.log_dir, exist_ok=True)
        if args.config:
            shutil.copy(args.config, os.path.join(self.log_dir, os.path.basename(args.config)))
        assert args.train_cfm or args.train_ar, "At least one model should be trained"
        self.model = {name: Part(seed) for seed, name in enumerate(("cfm", "cfm_lr", "ar", "ar_lr"))}
        cfm = args.pretrained_cfm_ckpt or self.find("CFM_epoch_*_step_*.pth")
        ar = args.pretrained_ar_ckpt or self.find("AR_epoch_*_step_*.pth")
        for kind, path in (("CFM", cfm), ("AR", ar)):
            if path:
                print(f"Loading {kind} checkpoint from {path}")
        # VoiceConversionWrapper.load_checkpoints: without a path, the default from HF.
        for kind, path in (("CFM", cfm), ("AR", ar)):
            if path is not None:
                print(f"Loading {kind} checkpoint from {path}...")
        if cfm is not None:
            load_into(
                self.model, twinlib.load(Path(cfm))["net"], {"cfm": "cfm", "cfm_lr": "length_regulator"}
            )
        if ar is not None:
            load_into(self.model, twinlib.load(Path(ar))["net"], {"ar": "ar", "ar_lr": "length_regulator"})
        self.iters = 0  # weights only

    def find(self, pattern: str) -> str | None:
        found = glob.glob(os.path.join(self.log_dir, pattern))
        if not found:
            return None
        latest, earliest = max(found, key=key), min(found, key=key)
        if earliest != latest and len(found) > 1:
            os.remove(earliest)
            print(f"Removed {earliest}")
        return latest

    def train(self) -> None:
        for epoch in range(1000):
            started = time.time()
            for i in range(self.args.batches):
                self.process_batch(epoch, i)
                if self.iters >= self.args.max_steps:
                    print("Reached max steps, stopping training")
                    self.save(epoch, fault_at(self.log_dir, self.iters, self.model))
                    sys.exit(0)
            print(f"Epoch {epoch} completed in {time.time() - started:.2f} seconds")
            if epoch + 1 >= self.args.max_epochs:
                print("Reached max epochs, stopping training")
                self.save(epoch, fault_at(self.log_dir, self.iters, self.model))
                sys.exit(0)

    def process_batch(self, epoch: int, i: int) -> None:
        time.sleep(self.args.step_time)
        loss_ar, norm_ar = self.model["ar"].step() if self.args.train_ar else (0.0, 0.0)
        loss_cfm, norm_cfm = self.model["cfm"].step() if self.args.train_cfm else (0.0, 0.0)
        if self.iters % 10 == 0:
            lr = self.model["cfm"].scheduler.get_last_lr()[0] if i != 0 else 0
            line = (
                "Epoch %d, Iteration %d, Loss: %.4f, Loss AR: %.4f, Loss CFM: %.4f, Grad Norm: %.4f, LR: %.6f"
            )
            print(line % (epoch, i, loss_ar + loss_cfm, loss_ar, loss_cfm, norm_ar + norm_cfm, lr))
        fault = fault_at(self.log_dir, self.iters, self.model)
        if self.iters != 0 and self.iters % self.args.save_every == 0:
            self.save(epoch, fault)
        self.iters += 1

    def save(self, epoch: int, fault: str | None) -> None:
        print("Saving checkpoint...")
        kinds = [kind for kind, on in (("AR", self.args.train_ar), ("CFM", self.args.train_cfm)) if on]
        for kind in kinds:
            net, lr = self.model[kind.lower()], self.model[f"{kind.lower()}_lr"]
            state = {
                "net": {kind.lower(): net.module.state_dict(), "length_regulator": lr.module.state_dict()},
                "iters": self.iters,
                "epoch": epoch,
            }
            path = os.path.join(self.log_dir, f"{kind}_epoch_{epoch:05d}_step_{self.iters:05d}.pth")
            twinlib.save(state, Path(path), torn=fault == "torn" and kind == kinds[-1])
            print(f"Saved {kind} checkpoint to {path}")
            kept = sorted(glob.glob(os.path.join(self.log_dir, f"{kind}_epoch_*_step_*.pth")), key=key)
            for old in kept[:-1]:
                os.remove(old)


def fault_at(run_dir: str, step: int, model: dict[str, Part]) -> str | None:
    """The fault planned for this step: nan poisons the weights now, torn is the caller's,
    the others end the process here."""
    fault = twinlib.due_fault(Path(run_dir), step)
    if fault == "nan":
        for part in model.values():
            twinlib.poison(part.module)
    elif fault != "torn":
        twinlib.die(fault)
    return fault


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--v2", action="store_true", help="behave as train_v2.py")
    parser.add_argument("--config", default=None)
    parser.add_argument("--pretrained-ckpt", default=None)
    parser.add_argument("--pretrained-cfm-ckpt", default=None)
    parser.add_argument("--pretrained-ar-ckpt", default=None)
    parser.add_argument("--dataset-dir", default="/path/to/dataset")
    parser.add_argument("--run-name", default="my_run")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=1000)
    parser.add_argument("--max-epochs", type=int, default=1000)
    parser.add_argument("--save-every", type=int, default=500)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--gpu", type=int, default=0)
    parser.add_argument("--train-cfm", action="store_true")
    parser.add_argument("--train-ar", action="store_true")
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--step-time", type=float, default=0.0)
    args = parser.parse_args()
    (V2 if args.v2 else V1)(args).train()


if __name__ == "__main__":
    main()
