"""The demo's trainer: a tiny CPU regression that saves and resumes like the real ones.

Like VITS, GPT-SoVITS and Applio it saves with a plain `torch.save` onto the final name
(`checkpoints/ckpt_<step>.pt`), resumes from the highest step, and, if that file does
not load, silently starts again from step 0. It injects the faults listed in
`faults.json` once each: a Python exception (exit 1), a SIGKILL (as from the OOM
killer), and a save torn half-way by a SIGKILL.
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
from pathlib import Path
from typing import Any

import torch


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


def die(kind: str, step: int) -> None:
    if kind == "sigkill":
        print(f"step {step}: (demo) the process gets SIGKILLed, as by the OOM killer", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
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
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    step = 0
    if (latest := newest_checkpoint(checkpoints)) is not None:
        try:
            state = torch.load(latest, weights_only=True)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            step = state["step"]
            print(f"resumed from {latest.name} at step {step}", flush=True)
        except Exception as exc:  # what VITS-like trainers do: carry on from scratch
            print(f"failed to load {latest.name} ({type(exc).__name__}); starting from step 0", flush=True)
    else:
        print("no checkpoint found: starting from step 0", flush=True)

    x = torch.linspace(-1, 1, 64).unsqueeze(1)
    y = 3 * x + 2
    while step < args.steps:
        step += 1
        loss = torch.nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        time.sleep(args.step_time)
        if step % 5 == 0:
            print(f"step {step} loss {loss.item():.4f}", flush=True)
        fault = due_fault(faults, step)
        if step % args.save_every == 0:
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step}
            name = "last.pt" if args.latest else f"ckpt_{step}.pt"
            save(state, checkpoints / name, torn=fault == "torn")
        if fault in ("exception", "sigkill"):
            die(fault, step)
    print(f"training finished at step {step}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
