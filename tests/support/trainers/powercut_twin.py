"""A trainer for the power-loss test: it saves slowly, so a kill at a random moment often
lands mid-save, and it behaves like VITS when its newest file will not load (it starts
again from step 0, silently but for one line).

    python powercut_twin.py RUN_DIR STEPS SAVE_EVERY

It saves `RUN_DIR/checkpoints/ckpt_<step>.pt` with a plain write onto the final name, in
chunks with pauses between them (no fsync: like `torch.save`), and resumes from the
highest step. POWERCUT_TWIN_WIDTH sets the model's width (64; 512 makes files of ~3 MB).
"""

from __future__ import annotations

import io
import os
import re
import sys
import time
from pathlib import Path

import torch

CHUNKS = 8
CHUNK_PAUSE_S = 0.01
STEP_S = 0.01


def newest(directory: Path) -> Path | None:
    found = [
        (int(m[1]), p) for p in directory.glob("ckpt_*.pt") if (m := re.fullmatch(r"ckpt_(\d+)\.pt", p.name))
    ]
    return max(found)[1] if found else None


def slow_save(state: dict[str, object], path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    size = -(-len(data) // CHUNKS)
    with path.open("wb") as fh:
        for start in range(0, len(data), size):
            fh.write(data[start : start + size])
            fh.flush()
            time.sleep(CHUNK_PAUSE_S)


def main(run_dir: Path, steps: int, save_every: int) -> int:
    checkpoints = run_dir / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    width = int(os.environ.get("POWERCUT_TWIN_WIDTH", "64"))  # 512: files of about 3 MB
    model = torch.nn.Linear(width, width)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    step = 0
    latest = newest(checkpoints)
    if latest is None:
        print("no checkpoint found: starting from step 0", flush=True)
    else:
        try:
            state = torch.load(latest, weights_only=True)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            step = int(state["step"])
            print(f"resumed from {latest.name} at step {step}", flush=True)
        except Exception as exc:
            print(f"failed to load {latest.name} ({type(exc).__name__}); starting from step 0", flush=True)
    x = torch.randn(32, width)
    while step < steps:
        step += 1
        loss = torch.nn.functional.mse_loss(model(x), x)
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        print(f"step {step} loss {loss.item():.5f}", flush=True)
        time.sleep(STEP_S)
        if step % save_every == 0:
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step}
            slow_save(state, checkpoints / f"ckpt_{step}.pt")
    print(f"training finished at step {step}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])))
