"""What the layout twins share: a tiny deterministic model, the fault plan, and saves
made the way the real trainers make them (plain `torch.save` onto the final name).

Faults come from `<run-dir>/faults.json`: a list of {"at": N, "kind": K} where N is the
twin's own save counter or step (each twin says which) and K one of
  "exception"  raise (exit 1 with a traceback)
  "sigkill"    the process is SIGKILLed (as by the OOM killer)
  "torn"       the save at N is cut half-way by a SIGKILL (power cut, full disk)
  "nan"        the weights saved at N are NaN (the loss went NaN just before)
  "say:TEXT"   print TEXT, then exit 1 (a fatal error message of the real trainer)
Each fires once, unless it has "repeat": true.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys
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


def die(kind: str | None) -> None:
    """Carry out a fault that ends the process; other kinds do nothing here."""
    if kind == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "exception":
        raise RuntimeError("(twin) simulated crash, e.g. a flaky data loader")
    if kind is not None and kind.startswith("say:"):
        say(kind[4:], err=True)
        sys.exit(1)


def save(obj: Any, path: Path, *, torn: bool = False) -> None:
    """`torch.save` straight onto the final path; `torn` leaves half of it and dies."""
    if not torn:
        torch.save(obj, path)
        return
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getvalue()
    with path.open("wb") as fh:
        fh.write(data[: len(data) // 2])
        fh.flush()
        os.fsync(fh.fileno())
    os.kill(os.getpid(), signal.SIGKILL)


def load(path: Path, **kwargs: Any) -> Any:
    return torch.load(path, map_location="cpu", weights_only=True, **kwargs)
