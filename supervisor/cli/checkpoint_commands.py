"""The `verify` and `plan` commands' work, outside any running supervisor."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import structlog

import trainer_adapters
from supervisor.checkpoints import entries
from supervisor.checkpoints.from_config import book_for
from supervisor.checkpoints.on_disk import request_for
from supervisor.checkpoints.plan import Plan
from supervisor.checkpoints.prepare import Preparation
from supervisor.checkpoints.verdicts import CHANGED_REREADS
from supervisor.config import Config
from supervisor.ledger import Ledger
from supervisor.outputs.reporter import Reporter
from supervisor.validator.client import ValidatorClient
from trainer_adapters.base import TrainerAdapter

log = structlog.get_logger("supervisor")


async def verify_paths(files: dict[Path, TrainerAdapter], client: ValidatorClient) -> list[dict[str, Any]]:
    """One result per path: could the trainer resume from it? `step` is the trainer's
    step (the number it counts batches or updates in), `epoch` beside it, and
    `resume_unit` says which of the two orders its resume states. The caller owns
    `client` (and closes it)."""
    return [await _verify_one(client, path, adapter) for path, adapter in files.items()]


async def _verify_one(client: ValidatorClient, path: Path, adapter: TrainerAdapter) -> dict[str, Any]:
    layout = adapter.layout(adapter.options())
    unit = adapter.position_unit
    if not os.path.lexists(path):
        return _rejected(path, "not found", unit)
    mode = os.lstat(path).st_mode
    if not stat.S_ISREG(mode):
        return _rejected(path, entries.describe(entries.kind_of(mode), path), unit)
    ckpt = layout.parse(path.absolute())
    if ckpt is None:
        what = layout.ignored(path.absolute()) or "an export, a pretrained or a temporary file?"
        return _rejected(path, f"not a resume checkpoint of this trainer ({what})", unit)
    for _ in range(CHANGED_REREADS):  # a file rewritten while it is read has no verdict yet
        verdict = await client.validate(request_for(layout, ckpt))
        if not verdict.changed:
            break
    result = {**verdict.to_json(), "path": str(path), "resume_unit": unit}
    result["verdict"] = (
        "ok" if verdict.ok else "unknown" if verdict.changed or verdict.validator_error else "rejected"
    )
    del result["shapes"]
    if unit == "epoch":  # the content's counter is the epoch; the trainer's step is in the name
        result["step"] = ckpt.save
    return result


def _rejected(path: Path, reason: str, unit: str) -> dict[str, Any]:
    return {
        "path": str(path),
        "ok": False,
        "step": None,
        "epoch": None,
        "reason": reason,
        "verdict": "rejected",
        "resume_unit": unit,
    }


async def plan_run(config: Config, *, apply: bool, accept_model_change: bool = False) -> dict[str, Any]:
    """Verify what is unverified and plan the resume; with `apply`, prepare the run
    directory exactly as the daemon does before a launch (supervisor/checkpoints/prepare.py)."""
    assert config.adapter.checkpoint_dir is not None
    layout = trainer_adapters.get(config.adapter.name).layout(config.adapter.options)
    ledger = Ledger.open(config.state_dir) if apply else Ledger.open_readonly(config.state_dir)
    run = ledger.run() if ledger is not None else None
    attempt = run.attempt if run is not None else 0

    report = Reporter(ledger if apply else None, attempt=lambda: attempt).report
    book = book_for(config, layout, ledger, report, record=apply, accept_model_change=accept_model_change)
    # A dry plan judges as `run` would launch; --apply prepares for whoever starts the trainer.
    preparation = Preparation(config, layout, ledger, book, report=report, launches=not apply)
    try:
        if apply:
            await preparation.start(attempt, run.best_step if run is not None else None)
        else:
            preparation.read_reboot_marks()
        # A NaN rollback the supervisor had still to carry out: the plan is the one it would make.
        below_step = run.carry.nan_below if run is not None else None
        outcome = await preparation.run(attempt, below_step, apply=apply)
        if apply and below_step is not None and outcome.refusal is None and ledger is not None:
            await preparation.rolled_back(below_step)
            ledger.rollback_carried_out()
            ledger.commit()
    finally:
        preparation.stop()
        await book.validator.close()
        if ledger is not None:
            ledger.close()
    result = describe(outcome.plan)
    if outcome.refusal is not None:
        result |= {"ok": False, "problem": outcome.refusal}
    # "applied": the preparation carried (some of) the plan out; with "ok" false it was
    # refused after that, and the moves made are in the ledger and the quarantine.
    return {**result, "applied": outcome.applied}


def describe(the_plan: Plan) -> dict[str, Any]:
    return {
        "ok": the_plan.ok,
        "summary": the_plan.summary(),
        "problem": the_plan.problem,
        "target_step": the_plan.target_step,
        "target": {role: str(p) for role, p in the_plan.target.items()},
        "lands_on": {role: str(p) for role, p in the_plan.lands_on.items()},
        "moves": [{"path": str(m.path), "reason": m.reason} for m in the_plan.moves],
        "restores": [{"path": str(r.path), "from": str(r.copy), "step": r.step} for r in the_plan.restores],
    }
