"""Layout twin of F5-TTS fine-tuning (`finetune_cli.py` driving `f5_tts.model.trainer.Trainer`), on CPU.

    python f5_tts_twin.py --dataset_name NAME [--epochs E] [--save_per_updates N]
        [--last_per_updates M] [--keep_last_n_checkpoints K] [--finetune --pretrain FILE]
        [--twin_batches B] [--twin_update_s SECONDS]

Run from the "repo root" (the cwd): checkpoints go to `ckpts/NAME/`. One update per batch
(grad_accumulation_steps 1), B batches per epoch. What the real trainer does and the twin does
the same way:

- `--finetune` copies the pretrained file into the directory as `pretrained_<basename>`;
- resume (`load_checkpoint`): nothing when the directory holds no .pt/.safetensors; else
  `model_last.pt` whenever present; else the max of the other `model_*` (.pt, .safetensors) by
  int(all digits of the name) (a name without digits raises); else the first `pretrained_*` in
  listdir order (a StopIteration when there is none). Safetensors are EMA weights; a dict without
  `update`/`step` loads its EMA weights into the model at update 0; otherwise model, optimizer,
  scheduler and the update are restored (`step` // grad accumulation for old files). A file that
  does not load raises (exit 1). Nothing is printed about any of it. The data position follows:
  the epoch and the batch within it come from the update;
- after each update: `model_last.pt` every M updates (printing `Saved last checkpoint at update
  N`), then `model_<N>.pt` every N updates (none with K = 0), then with K > 0 the oldest by
  int(name.split("_")[1].split(".")[0]) removed (`Removed old checkpoint: <name>`); once more
  `model_last.pt` at the end, then exit 0;
- tqdm on stderr: `Epoch e/E:  P%|...| i/n [..., loss=0.712, update=6]`, `loss=nan` once NaN.

Faults (faults.json in the cwd), "at" = the update, read as it starts: "nan" poisons the weights
then (its loss and every save from it are NaN); "torn" cuts the first save of that update;
"torn_exit" (at the last update) cuts its saves and the final one half-way, and the process
exits 0; "torn_empty" kills the process right after the truncating open of model_last.pt; the others end the process after that update's saves. `--twin_save_pause_s S`: each
`model_last.pt` save stalls S after its truncating open and again half-way (a loaded writer).
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import torch
from twinlib import die, due_fault, load, poison, save, say, tiny_model, train_step


class EMA(torch.nn.Module):
    """ema_pytorch's EMA(include_online_model=False): keys initted, step, ema_model.*"""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.ema_model = copy.deepcopy(model)
        self.register_buffer("initted", torch.tensor(True))
        self.register_buffer("step", torch.tensor(0))

    def update(self, model: torch.nn.Module) -> None:
        with torch.no_grad():
            for mine, theirs in zip(self.ema_model.parameters(), model.parameters(), strict=True):
                mine.lerp_(theirs, 0.1)
            self.get_buffer("step").add_(1)


def tqdm_num(n: float) -> str:
    short = f"{n:.3g}".replace("+0", "+").replace("-0", "-")
    return short if len(short) < len(str(n)) else str(n)


def bar(desc: str, i: int, total: int, postfix: dict[str, Any] | None = None) -> str:
    pct = 100 * i // total
    filled = "█" * (10 * i // total)
    rate = "<00:00, 6.41update/s" if postfix else "<?, ?update/s"
    post = "".join(
        f", {k}={tqdm_num(v) if isinstance(v, float) else v}" for k, v in sorted((postfix or {}).items())
    )
    return f"\r{desc}: {pct:3d}%|{filled:<10}| {i}/{total} [00:00{rate}{post}]"


class Trainer:
    def __init__(self, args: argparse.Namespace, checkpoint_path: str) -> None:
        self.args = args
        self.checkpoint_path = checkpoint_path
        self.model = tiny_model()
        self.ema_model = EMA(self.model)
        say("Using logger: None")
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=args.learning_rate)
        warmup = 2
        total = args.twin_batches * args.epochs
        self.scheduler = torch.optim.lr_scheduler.SequentialLR(
            self.optimizer,
            schedulers=[
                torch.optim.lr_scheduler.LinearLR(self.optimizer, 1e-8, 1.0, total_iters=warmup),
                torch.optim.lr_scheduler.LinearLR(self.optimizer, 1.0, 1e-8, total_iters=total - warmup),
            ],
            milestones=[warmup],
        )
        self.torn_pending = False
        self.exit_torn = False  # the final save is cut half-way, and the process exits 0
        self.empty_pending = False  # the next model_last.pt save dies right after its open

    def save_checkpoint(self, update: int, last: bool = False) -> None:
        checkpoint = {
            "model_state_dict": self.model.state_dict(),
            "optimizer_state_dict": self.optimizer.state_dict(),
            "ema_model_state_dict": self.ema_model.state_dict(),
            "scheduler_state_dict": self.scheduler.state_dict(),
            "update": update,
        }
        os.makedirs(self.checkpoint_path, exist_ok=True)
        torn, self.torn_pending = self.torn_pending, False
        if last:
            path = Path(f"{self.checkpoint_path}/model_last.pt")
            pause, empty = self.args.twin_save_pause_s, self.empty_pending
            save(checkpoint, path, torn=torn, pause_s=pause, exit_torn=self.exit_torn, empty=empty)
            say(f"Saved last checkpoint at update {update}")
            return
        keep = self.args.keep_last_n_checkpoints
        if keep == 0:
            return
        save(checkpoint, Path(f"{self.checkpoint_path}/model_{update}.pt"), torn=torn)
        if keep > 0:
            names = [
                f
                for f in os.listdir(self.checkpoint_path)
                if f.startswith("model_") and f.endswith(".pt") and f != "model_last.pt"
            ]
            names.sort(key=lambda x: int(x.split("_")[1].split(".")[0]))
            while len(names) > keep:
                oldest = names.pop(0)
                os.remove(os.path.join(self.checkpoint_path, oldest))
                say(f"Removed old checkpoint: {oldest}")

    def load_checkpoint(self) -> int:
        names = os.listdir(self.checkpoint_path) if os.path.exists(self.checkpoint_path) else []
        if not any(f.endswith((".pt", ".safetensors")) for f in names):
            return 0
        if "model_last.pt" in names:
            latest = "model_last.pt"
        else:
            candidates = [
                f
                for f in names
                if f.startswith(("model_", "pretrained_")) and f.endswith((".pt", ".safetensors"))
            ]
            training = [f for f in candidates if f.startswith("model_") and f != "model_last.pt"]
            if training:
                latest = sorted(training, key=lambda x: int("".join(filter(str.isdigit, x))))[-1]
            else:
                latest = next(f for f in candidates if f.startswith("pretrained_"))
        path = Path(f"{self.checkpoint_path}/{latest}")
        checkpoint: dict[str, Any]
        if latest.endswith(".safetensors"):
            from safetensors.torch import load_file

            checkpoint = {"ema_model_state_dict": load_file(path, device="cpu")}
        else:
            checkpoint = load(path)
        self.ema_model.load_state_dict(checkpoint["ema_model_state_dict"])
        if "update" in checkpoint or "step" in checkpoint:
            if "step" in checkpoint:
                checkpoint["update"] = checkpoint["step"]  # // grad_accumulation_steps (1 here)
            self.model.load_state_dict(checkpoint["model_state_dict"])
            self.optimizer.load_state_dict(checkpoint["optimizer_state_dict"])
            self.scheduler.load_state_dict(checkpoint["scheduler_state_dict"])
            return int(checkpoint["update"])
        ema = checkpoint["ema_model_state_dict"]
        skip = ("initted", "update", "step")
        self.model.load_state_dict({k.replace("ema_model.", ""): v for k, v in ema.items() if k not in skip})
        return 0

    def train(self) -> None:
        args, batches = self.args, self.args.twin_batches
        start_update = self.load_checkpoint()
        global_update = start_update
        skipped_epoch, skipped_batch = divmod(start_update, batches)
        for epoch in range(skipped_epoch, args.epochs):
            initial = skipped_batch if epoch == skipped_epoch else 0
            desc = f"Epoch {epoch + 1}/{args.epochs}"
            print(bar(desc, initial, batches), end="", file=sys.stderr, flush=True)
            for i in range(initial, batches):
                time.sleep(args.twin_update_s)
                fault = due_fault(Path.cwd(), global_update + 1)
                if fault == "nan":
                    poison(self.model)
                self.torn_pending = fault == "torn"
                self.exit_torn = fault == "torn_exit"
                self.empty_pending = fault == "torn_empty"
                loss = train_step(self.model, self.optimizer)
                self.scheduler.step()
                self.ema_model.update(self.model)
                global_update += 1
                post = {"update": str(global_update), "loss": loss}
                print(bar(desc, i + 1, batches, post), end="", file=sys.stderr, flush=True)
                if global_update % args.last_per_updates == 0:
                    self.save_checkpoint(global_update, last=True)
                if global_update % args.save_per_updates == 0:
                    self.save_checkpoint(global_update)
                self.torn_pending = False
                die(fault)
            print(file=sys.stderr, flush=True)
        self.save_checkpoint(global_update, last=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--exp_name", default="F5TTS_v1_Base")
    parser.add_argument("--dataset_name", default="Emilia_ZH_EN")
    parser.add_argument("--learning_rate", type=float, default=1e-5)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--save_per_updates", type=int, default=50000)
    parser.add_argument("--keep_last_n_checkpoints", type=int, default=-1)
    parser.add_argument("--last_per_updates", type=int, default=5000)
    parser.add_argument("--finetune", action="store_true")
    parser.add_argument("--pretrain", default=None)
    parser.add_argument("--twin_batches", type=int, default=4)
    parser.add_argument("--twin_update_s", type=float, default=0.05)
    parser.add_argument("--twin_save_pause_s", type=float, default=0.0)
    args = parser.parse_args()
    checkpoint_path = f"ckpts/{args.dataset_name}"
    if args.finetune and args.pretrain:
        os.makedirs(checkpoint_path, exist_ok=True)
        name = os.path.basename(args.pretrain)
        if not name.startswith("pretrained_"):
            name = "pretrained_" + name
        target = os.path.join(checkpoint_path, name)
        if not os.path.isfile(target):
            shutil.copy2(args.pretrain, target)
            say("copy checkpoint for finetune")
    say("\nvocab : ", 2546)
    say("\nvocoder : ", "vocos")
    trainer = Trainer(args, checkpoint_path)
    trainer.train()
    return 0


if __name__ == "__main__":
    sys.exit(main())
