"""GPT-SoVITS stage 1's resume, on the real PyTorch Lightning (whatever version is
installed), on CPU: a tiny LightningModule whose hyper_parameters hold a pathlib path
(`save_hyperparameters()` of `output_dir`, as Text2SemanticLightningModule does), a
ModelCheckpoint writing `<output_dir>/ckpt/epoch=E-step=S.ckpt` every epoch, and
s1_train.py's own resume: the newest name by (epoch, step) that its regex matches, printed
as `ckpt_path: ...`, handed to `trainer.fit(ckpt_path=...)` with no weights_only argument.

    python lightning_s1.py OUTPUT_DIR EPOCHS [CRASH_AT_EPOCH]

CRASH_AT_EPOCH: raise at the start of that (0-based) epoch, once (a marker file in
OUTPUT_DIR remembers it).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset


class Module(LightningModule):
    def __init__(self, output_dir: Path) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch: Any, index: int) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
        return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, step_size=10)]


class CrashOnce(Callback):
    def __init__(self, epoch: int, marker: Path) -> None:
        self.epoch, self.marker = epoch, marker

    def on_train_epoch_start(self, trainer: Trainer, module: LightningModule) -> None:
        if trainer.current_epoch == self.epoch and not self.marker.exists():
            self.marker.write_text("crashed")
            raise RuntimeError("(twin) simulated crash, e.g. a flaky data loader")


def newest(names: list[str]) -> str:
    """AR/utils get_newest_ckpt: re.match, max by (epoch, step); IndexError when none."""
    found = [(int(m[1]), int(m[2]), n) for n in names if (m := re.match(r"epoch=(\d+)-step=(\d+)\.ckpt", n))]
    return sorted(found, reverse=True)[0][2]


def main(output_dir: Path, epochs: int, crash_at: int | None) -> None:
    ckpt_dir = output_dir / "ckpt"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(16, 4), torch.randn(16, 1)), batch_size=4)
    callbacks: list[Callback] = [ModelCheckpoint(dirpath=ckpt_dir, save_top_k=-1, every_n_epochs=1)]
    if crash_at is not None:
        callbacks.append(CrashOnce(crash_at, output_dir / "crashed"))
    trainer = Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )
    try:
        ckpt_path: Path | None = ckpt_dir / newest(os.listdir(ckpt_dir))
    except Exception:
        ckpt_path = None
    print("ckpt_path:", ckpt_path, flush=True)
    trainer.fit(Module(output_dir), data, ckpt_path=ckpt_path)


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else None)
