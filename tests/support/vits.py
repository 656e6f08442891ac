"""A VITS-shaped run directory, and reading what the VITS twin's runs said and left."""

from __future__ import annotations

import json
from pathlib import Path

# --- end to end with the twin --------------------------------------------------------------

MODEL_DIR = "./logs/ljs_base"


def vits_root(tmp_path: Path, *, epochs: int = 3, step_s: float = 0.01) -> Path:
    """A VITS checkout: configs/ljs_base.json (20 batches an epoch, a save every 10)."""
    root = tmp_path / "vits"
    (root / "configs").mkdir(parents=True)
    train = {"log_interval": 5, "eval_interval": 10, "seed": 1234, "epochs": epochs, "learning_rate": 2e-4}
    train |= {"betas": [0.8, 0.99], "eps": 1e-9, "batch_size": 64, "fp16_run": True, "lr_decay": 0.999875}
    config = {
        "train": train,
        "data": {"training_files": "filelists/ljs_audio_text_train_filelist.txt.cleaned"},
        "model": {"inter_channels": 192, "upsample_rates": [8, 8, 2, 2]},
        "twin": {"batches_per_epoch": 20, "step_s": step_s},
    }
    (root / "configs" / "ljs_base.json").write_text(json.dumps(config))
    return root


def loaded(lines: list[str]) -> list[str]:
    return [line.removeprefix("INFO:ljs_base:") for line in lines if "Loaded checkpoint" in line]


def quarantined(tmp_path: Path) -> list[str]:
    found = sorted((tmp_path / "state" / "quarantine").glob("*/*.pth"))
    for path in found:
        note = json.loads(path.with_name(path.name + ".json").read_text())
        assert note["original_path"] == str(tmp_path / "vits" / "logs" / "ljs_base" / path.name)
    return sorted(p.name for p in found)
