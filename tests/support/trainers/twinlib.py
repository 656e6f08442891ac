"""What the layout twins share: a tiny deterministic model, the fault plan, and saves
made the way the real trainers make them (plain `torch.save` onto the final name).

Faults come from `<run-dir>/faults.json`: a list of {"at": N, "kind": K} where N is the
twin's own save counter or step (each twin says which) and K one of
  "exception"  raise (exit 1 with a traceback)
  "sigkill"    the process is SIGKILLed (as by the OOM killer)
  "torn"       the save at N is cut half-way by a SIGKILL (power cut, full disk)
  "nan"        the weights saved at N are NaN (the loss went NaN just before)
  "say:TEXT"   print TEXT, then exit 1 (a fatal error message of the real trainer)
  "hang"       stop printing and saving, alive (a collective that never returns)
  "sigstop"    the process stops itself (SIGSTOP): alive, silent, deaf to SIGTERM
  "cuda_oom"   print PyTorch's CUDA out-of-memory traceback, then exit 1
  "oom_kill:PATH"  count an OOM kill in the fake cgroup file PATH, then SIGKILL itself
Each fires once, unless it has "repeat": true.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch


def say(*parts: object, err: bool = False) -> None:
    print(*parts, file=sys.stderr if err else sys.stdout, flush=True)


def tiny_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Linear(2, 2)


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> float:
    x = torch.linspace(-1, 1, 16).reshape(8, 2)
    loss = torch.nn.functional.mse_loss(model(x), x * 2 + 1)
    optimizer.zero_grad()
    loss.backward()  # type: ignore[no-untyped-call]
    optimizer.step()
    return float(loss.item())


def poison(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))


def due_fault(run_dir: Path, at: int) -> str | None:
    """The fault planned for `at`, marked done so it fires once (unless "repeat")."""
    path = run_dir / "faults.json"
    faults: list[dict[str, Any]] = json.loads(path.read_text()) if path.exists() else []
    for fault in faults:
        if fault["at"] == at and not fault.get("done"):
            fault["done"] = not fault.get("repeat", False)
            path.write_text(json.dumps(faults, indent=1))
            return str(fault["kind"])
    return None


CUDA_OOM = """Traceback (most recent call last):
  File "train.py", line 312, in train_and_evaluate
    y_hat, l_length, attn, ids_slice, x_mask, z_mask = net_g(x, x_lengths, spec, spec_lengths)
torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.17 GiB. GPU 0 has a total capacity \
of 23.65 GiB of which 402.31 MiB is free. Of the allocated memory 21.10 GiB is allocated by PyTorch."""


def count_oom_kill(events: Path) -> None:
    """What the kernel does to the cgroup's memory.events when its OOM killer strikes."""
    counts = dict(line.split() for line in events.read_text().splitlines() if line.strip())
    counts["oom_kill"] = str(int(counts.get("oom_kill", "0")) + 1)
    counts["oom"] = str(int(counts.get("oom", "0")) + 1)
    events.write_text("".join(f"{k} {v}\n" for k, v in counts.items()))


def die(kind: str | None) -> None:
    """Carry out a fault that ends or freezes the process; other kinds do nothing here."""
    if kind == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "hang":
        signal.pause()  # alive, silent, until a signal ends it
    if kind == "sigstop":
        os.kill(os.getpid(), signal.SIGSTOP)
    if kind == "cuda_oom":
        say(CUDA_OOM, err=True)
        sys.exit(1)
    if kind is not None and kind.startswith("oom_kill:"):
        count_oom_kill(Path(kind.split(":", 1)[1]))
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "exception":
        raise RuntimeError("(twin) simulated crash, e.g. a flaky data loader")
    if kind is not None and kind.startswith("say:"):
        say(kind[4:], err=True)
        sys.exit(1)


def save(
    obj: Any,
    path: Path,
    *,
    torn: bool = False,
    pause_s: float = 0.0,
    exit_torn: bool = False,
    empty: bool = False,
) -> None:
    """`torch.save` straight onto the final path; `torn` leaves half of it and dies
    (`exit_torn`: half of it, and the process goes on; `empty`: dies right after the
    truncating open). `pause_s`: a writer on a loaded machine, which stalls after its
    truncating open and again half-way."""
    if empty:
        path.open("wb").close()
        os.kill(os.getpid(), signal.SIGKILL)
    if not (torn or pause_s or exit_torn):
        torch.save(obj, path)
        return
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getvalue()
    with path.open("wb") as fh:
        time.sleep(pause_s)
        fh.write(data[: len(data) // 2])
        fh.flush()
        os.fsync(fh.fileno())
        if torn:
            os.kill(os.getpid(), signal.SIGKILL)
        if exit_torn:
            return
        time.sleep(pause_s)
        fh.write(data[len(data) // 2 :])


def load(path: Path, **kwargs: Any) -> Any:
    return torch.load(path, map_location="cpu", weights_only=True, **kwargs)
