"""Layout twin of GPT-SoVITS stage 1 (`GPT_SoVITS/s1_train.py` on PyTorch Lightning 2.x), on CPU.

    python gpt_sovits_s1_twin.py --config_file CONFIG

CONFIG is what the WebUI writes to TEMP/tmp_s1.yaml, as JSON (which is YAML): `output_dir`,
`pretrained_s1` (optional), `train.{epochs, save_every_n_epoch, if_save_latest, precision,
if_save_every_weights, half_weights_save_dir, exp_name}`, and twin-only `twin.batches` (per epoch,
default 9) and `twin.batch_s` (seconds per batch). The resume loads weights-only with torch's
defaults (the pathlib hazard) where Lightning 2.6+ is installed, as Lightning 2.6+ does, or where
`twin.lightning_2_6` says so; else as Lightning < 2.6 does. Paths are relative to the cwd. What the real trainer does and the twin does the same way:

- the pretrained weights (key `weight`) are loaded strictly into the module at every start,
  printing `<All keys matched successfully>` (a mismatch raises: exit 1);
- resume: the max by (epoch, step) of the names in `<output_dir>/ckpt/` that `re.match` the
  trainer's regex (a prefix match), printed as `ckpt_path: <path or None>`; Lightning's restore
  lines; a file that does not load raises (exit 1); it continues at the next epoch, and past
  `max_epochs` it only prints the completion line;
- manual optimization: one optimizer step per 4 batches (batch_idx > 0 and batch_idx % 4 == 0),
  so `global_step` counts those; the tqdm bar on stdout (`\\r`), with Lightning's number format;
- at the end of every `save_every_n_epoch`-th epoch: `epoch=E-step=S.ckpt` (E 0-based) written
  to a temp file and moved into place, then with `if_save_latest` every file listed in ckpt/
  before that save is deleted, then the half-weights export `<exp_name>-e<E+1>.ckpt`.

Faults (faults.json in the cwd), "at" = the 0-based epoch, read when it starts: "nan" poisons
the weights then (the epoch's losses and its checkpoint are NaN); "torn" cuts that epoch's save
(a move across filesystems, which copies); the others end the process after the save.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path, PosixPath
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import torch
from twinlib import die, due_fault, load, poison, save, say, tiny_model, train_step

LIGHTNING_VERSION = "2.5.1"


class Text2SemanticLightningModule(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.model = tiny_model()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)  # type: ignore[no-any-return]


def get_newest_ckpt(names: list[str]) -> str:
    found = []
    for name in names:
        m = re.match(r"epoch=(\d+)-step=(\d+)\.ckpt", name)
        if m:
            found.append((int(m.group(1)), int(m.group(2)), name))
    return sorted(found, key=lambda x: (x[0], x[1]), reverse=True)[0][2]  # IndexError when none


def tqdm_num(n: float) -> str:
    short = f"{n:.3g}".replace("+0", "+").replace("-0", "-")
    return short if len(short) < len(str(n)) else str(n)


def lightning_num(n: float) -> str:
    """Lightning's Tqdm.format_num: tqdm's, then padded to 5 characters (nan -> nan.0)."""
    text = tqdm_num(n)
    if "e" not in text:
        if "." not in text and len(text) < 5:
            text += "."
        text += "0" * (5 - len(text))
    return text


def bar(epoch: int, i: int, total: int, v_num: int, metrics: dict[str, float]) -> str:
    pct = 100 * i // total
    filled = "█" * (10 * i // total)
    post = ", ".join(f"{k}={lightning_num(v)}" for k, v in metrics.items())
    return (
        f"\rEpoch {epoch}: {pct:3d}%|{filled:<10}| {i}/{total} [00:00<00:00, 9.50it/s, v_num={v_num}, {post}]"
    )


def lightning_save(state: dict[str, Any], path: Path, torn: bool) -> None:
    """fsspec's local transaction: a temp file in the system temp dir, then shutil.move."""
    if torn:
        save(state, path, torn=True)  # the move copied across filesystems and was cut
    fd, tmp = tempfile.mkstemp()
    os.close(fd)
    torch.save(state, tmp)
    shutil.move(tmp, path)


def lightning_2_6_installed() -> bool:
    try:
        version = importlib.metadata.version("pytorch-lightning")
    except importlib.metadata.PackageNotFoundError:
        return False
    major, minor = (int(part) for part in version.split(".")[:2])
    return (major, minor) >= (2, 6)


def restore(path: Path, lightning_2_6: bool) -> dict[str, Any]:
    if lightning_2_6:
        return load(path)  # type: ignore[no-any-return]
    with torch.serialization.safe_globals([PosixPath]):
        return load(path)  # type: ignore[no-any-return]


class Run:
    """The Lightning module, its optimizer and scheduler, and the fit loop's counters."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.train = config["train"]
        self.output_dir = Path(config["output_dir"])
        self.ckpt_dir = self.output_dir / "ckpt"
        self.module = Text2SemanticLightningModule()
        if config.get("pretrained_s1"):  # strict, at every start
            say(self.module.load_state_dict(load(Path(config["pretrained_s1"]))["weight"]))
        self.optimizer = torch.optim.Adam(self.module.parameters(), lr=0.01)
        self.scheduler = torch.optim.lr_scheduler.LinearLR(self.optimizer, start_factor=0.5, total_iters=100)
        self.epoch, self.step = 0, 0

    def fit(self, ckpt_path: Path | None, lightning_2_6: bool) -> None:
        if ckpt_path is None:
            return
        say(f"Restoring states from the checkpoint path at {ckpt_path}", err=True)
        state = restore(ckpt_path, lightning_2_6)
        self.module.load_state_dict(state["state_dict"])
        self.optimizer.load_state_dict(state["optimizer_states"][0])
        self.scheduler.load_state_dict(state["lr_schedulers"][0])
        self.epoch, self.step = state["epoch"] + 1, state["global_step"]  # the saved epoch was complete
        say(f"Restored all states from the checkpoint at {ckpt_path}", err=True)

    def batch(self, batch_idx: int) -> float:
        if batch_idx > 0 and batch_idx % 4 == 0:  # manual optimization: global_step counts these
            loss = train_step(self.module, self.optimizer)
            self.scheduler.step()
            self.step += 1
            return loss
        with torch.no_grad():
            x = torch.linspace(-1, 1, 16).reshape(8, 2)
            return float(torch.nn.functional.mse_loss(self.module(x), x * 2 + 1))

    def checkpoint(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "global_step": self.step,
            "pytorch-lightning_version": LIGHTNING_VERSION,
            "state_dict": self.module.state_dict(),
            "loops": {"fit_loop": {"epoch_progress": {"current": {"completed": self.epoch}}}},
            # As Lightning's ModelCheckpoint keeps it: kth_value inf until a score is monitored.
            "callbacks": {
                "my_model_ckpt{'monitor': 'top_3_acc'}": {
                    "dirpath": str(self.ckpt_dir.resolve()),
                    "kth_value": torch.tensor(float("inf")),
                }
            },
            "optimizer_states": [self.optimizer.state_dict()],
            "lr_schedulers": [self.scheduler.state_dict()],
            "MixedPrecision": {"scale": 65536.0, "growth_factor": 2.0, "_growth_tracker": 0},
            "hparams_name": "kwargs",
            "hyper_parameters": {"config": self.config, "output_dir": self.output_dir, "is_train": True},
        }

    def on_train_epoch_end(self, torn: bool) -> None:
        if (self.epoch + 1) % self.train.get("save_every_n_epoch", 1) != 0:
            return
        to_clean = os.listdir(self.ckpt_dir) if self.train.get("if_save_latest", True) else []
        lightning_save(self.checkpoint(), self.ckpt_dir / f"epoch={self.epoch}-step={self.step}.ckpt", torn)
        for name in to_clean:  # the real callback ignores every error here
            with contextlib.suppress(Exception):
                os.remove(f"{self.ckpt_dir}/{name}")
        if self.train.get("if_save_every_weights") and self.train.get("half_weights_save_dir"):
            weights = {k: v.half() for k, v in self.module.state_dict().items()}
            export = {"weight": weights, "config": self.config, "info": f"GPT-e{self.epoch + 1}"}
            out = Path(self.train["half_weights_save_dir"])
            out.mkdir(parents=True, exist_ok=True)
            tmp = f"{time.time()}.pth"  # my_save: in the cwd, then moved
            torch.save(export, tmp)
            shutil.move(tmp, out / f"{self.train['exp_name']}-e{self.epoch + 1}.ckpt")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("-c", "--config_file", type=str, default="configs/s1longer.yaml")
    config = json.loads(Path(parser.parse_args().config_file).read_text())
    train, twin = config["train"], config.get("twin", {})
    output_dir = Path(config["output_dir"])
    (output_dir / "ckpt").mkdir(parents=True, exist_ok=True)

    say(f"Seed set to {train.get('seed', 1234)}", err=True)
    if train.get("precision", "16-mixed") == "16-mixed":
        say("Using 16bit Automatic Mixed Precision (AMP)", err=True)
    say("GPU available: False, used: False", err=True)
    run = Run(config)
    try:
        ckpt_path: Path | None = run.ckpt_dir / get_newest_ckpt(os.listdir(run.ckpt_dir))
    except Exception:
        ckpt_path = None
    say("ckpt_path:", ckpt_path)
    run.fit(ckpt_path, twin.get("lightning_2_6", lightning_2_6_installed()))

    versions = output_dir / output_dir.stem  # TensorBoardLogger(save_dir=output_dir, name=stem)
    v_num = len(list(versions.glob("version_*"))) if versions.exists() else 0
    (versions / f"version_{v_num}").mkdir(parents=True)
    batches = twin.get("batches", 9)
    for epoch in range(run.epoch, train["epochs"]):
        run.epoch = epoch
        fault = due_fault(Path.cwd(), epoch)
        if fault == "nan":
            poison(run.module)
        for batch_idx in range(batches):
            time.sleep(twin.get("batch_s", 0.05))
            metrics = {
                "total_loss_step": run.batch(batch_idx) * 1000,
                "lr_step": 0.01,
                "top_3_acc_step": 0.183,
            }
            print(bar(epoch, batch_idx + 1, batches, v_num, metrics), end="", flush=True)
        print(flush=True)
        run.on_train_epoch_end(torn=fault == "torn")
        die(fault)
    say(f"`Trainer.fit` stopped: `max_epochs={train['epochs']}` reached.", err=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
