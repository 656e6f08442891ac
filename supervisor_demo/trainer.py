"""The demo's trainer: a tiny CPU regression that saves and resumes like the real ones.

Like VITS, GPT-SoVITS and Applio it saves with a plain `torch.save` onto the final name
(`checkpoints/ckpt_<step>.pt`), resumes from the highest step, and, if that file does
not load, silently starts again from step 0. It reports every step with the heartbeat
client (a no-op outside the supervisor). It injects the faults listed in `faults.json`
once each:

- "exception": a Python exception (exit 1);
- "sigkill": a SIGKILL, as from the OOM killer;
- "torn": the save at that step torn half-way by a SIGKILL, as by a power cut;
- "hang": it stops making progress and sleeps for ever, as on a deadlock;
- "nan": from that step on its loss is NaN, as on a corrupt data shard. Like fp16's
  GradScaler it skips the update on a non-finite loss, so its weights, and the
  checkpoints it goes on saving, stay finite. No other fault happens in that process.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from supervisor.client import heartbeat


@dataclass
class Trainer:
    model: torch.nn.Linear
    optimizer: torch.optim.SGD
    step: int = 0
    poisoned: bool = False  # a "nan" fault happened: every batch from now on gives NaN


def newest_checkpoint(directory: Path) -> Path | None:
    if (directory / "last.pt").exists():  # like F5-TTS: the in-place "latest" file wins
        return directory / "last.pt"
    found = [
        (int(m.group(1)), p)
        for p in directory.glob("ckpt_*.pt")
        if (m := re.fullmatch(r"ckpt_(\d+)\.pt", p.name))
    ]
    return max(found)[1] if found else None


def due_fault(faults_file: Path, step: int) -> str | None:
    """The fault planned for this step, marked done so it happens once (unless it
    says "repeat": true)."""
    faults = json.loads(faults_file.read_text()) if faults_file.exists() else []
    for fault in faults:
        if fault["at_step"] == step and not fault.get("done"):
            fault["done"] = not fault.get("repeat", False)
            faults_file.write_text(json.dumps(faults, indent=1))
            return str(fault["kind"])
    return None


def fail(kind: str, step: int) -> None:
    if kind == "sigkill":
        print(f"step {step}: (demo) the process gets SIGKILLed, as by the OOM killer", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "hang":
        print(f"step {step}: (demo) the training loop gets stuck, as on a deadlock", flush=True)
        while True:
            time.sleep(3600)
    raise RuntimeError(f"(demo) simulated crash at step {step}, e.g. a flaky data loader")


def save(state: dict[str, Any], path: Path, torn: bool) -> None:
    if not torn:
        torch.save(state, path)
        return
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    with path.open("wb") as fh:
        fh.write(data[: len(data) // 2])
        fh.flush()
        os.fsync(fh.fileno())
    print(f"(demo) power cut while saving {path.name}: half of it is on disk", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def resume(trainer: Trainer, checkpoints: Path) -> None:
    latest = newest_checkpoint(checkpoints)
    if latest is None:
        print("no checkpoint found: starting from step 0", flush=True)
        return
    try:
        state = torch.load(latest, weights_only=True)
        trainer.model.load_state_dict(state["model"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.step = state["step"]
        print(f"resumed from {latest.name} at step {trainer.step}", flush=True)
    except Exception as exc:  # what VITS-like trainers do: carry on from scratch
        print(f"failed to load {latest.name} ({type(exc).__name__}); starting from step 0", flush=True)


def train_step(trainer: Trainer, x: torch.Tensor, y: torch.Tensor) -> float:
    if trainer.poisoned:
        x = torch.full_like(x, float("nan"))
    loss = torch.nn.functional.mse_loss(trainer.model(x), y)
    trainer.optimizer.zero_grad()
    loss.backward()  # type: ignore[no-untyped-call]
    if torch.isfinite(loss):
        trainer.optimizer.step()
    return float(loss.item())


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--save-every", type=int, default=10)
    parser.add_argument("--step-time", type=float, default=0.04)
    parser.add_argument("--latest", action="store_true", help="save only last.pt, rewritten in place")
    args = parser.parse_args()
    checkpoints = args.run_dir / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    faults = args.run_dir / "faults.json"

    torch.manual_seed(0)
    model = torch.nn.Linear(1, 1)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.05))
    resume(trainer, checkpoints)

    x = torch.linspace(-1, 1, 64).unsqueeze(1)
    y = 3 * x + 2
    while trainer.step < args.steps:
        trainer.step += 1
        step = trainer.step
        # A NaN attempt goes on until the supervisor stops it, which takes longer on a busy
        # machine: the faults planned after it are for the attempts after it.
        fault = None if trainer.poisoned else due_fault(faults, step)
        trainer.poisoned = trainer.poisoned or fault == "nan"
        loss = train_step(trainer, x, y)
        time.sleep(args.step_time)
        print(f"step {step} loss {loss:.4f}", flush=True)
        if step % args.save_every == 0:
            state = {"model": model.state_dict(), "optimizer": trainer.optimizer.state_dict(), "step": step}
            name = "last.pt" if args.latest else f"ckpt_{step}.pt"
            save(state, checkpoints / name, torn=fault == "torn")
        # Reported at the end of the step, as trainers log: a step's checkpoint is on disk
        # before the supervisor hears that its loss went bad.
        heartbeat(step=step, loss=loss)
        if fault in ("exception", "sigkill", "hang"):
            fail(fault, step)
    print(f"training finished at step {trainer.step}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
