"""The `verify` and `plan` commands' work, outside any running supervisor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trainer_adapters
from supervisor.checkpoints import CheckpointBook, request_for
from supervisor.config import Config
from supervisor.ledger import Ledger
from supervisor.planner import Plan
from supervisor.validation import ValidatorClient
from trainer_adapters.base import Layout


async def verify_paths(layouts: dict[Path, Layout]) -> list[dict[str, Any]]:
    """One result per path: could the trainer resume from it?"""
    client = ValidatorClient()
    results = []
    try:
        for path, layout in layouts.items():
            results.append(await _verify_one(client, path, layout))
    finally:
        await client.close()
    return results


async def _verify_one(client: ValidatorClient, path: Path, layout: Layout) -> dict[str, Any]:
    if not path.exists():
        return _rejected(path, "not found")
    if not path.is_file():
        return _rejected(path, "not a regular file")
    ckpt = layout.parse(path.absolute())
    if ckpt is None:
        what = layout.ignored(path.absolute()) or "an export, a pretrained or a temporary file?"
        return _rejected(path, f"not a resume checkpoint of this trainer ({what})")
    verdict = await client.validate(request_for(layout, ckpt))
    return {**verdict.to_json(), "path": str(path)}


def _rejected(path: Path, reason: str) -> dict[str, Any]:
    return {"path": str(path), "ok": False, "step": None, "epoch": None, "reason": reason}


async def plan_run(config: Config, *, apply: bool) -> dict[str, Any]:
    """Verify what is unverified, plan the resume, and with `apply` carry it out."""
    assert config.adapter.checkpoint_dir is not None
    layout = trainer_adapters.get(config.adapter.name).layout(config.adapter.options)
    ledger = Ledger.open(config.state_dir) if apply else Ledger.open_readonly(config.state_dir)
    client = ValidatorClient(
        job_timeout_s=config.checkpoints.validation_timeout_s,
        memory_limit_mb=config.checkpoints.validator_memory_mb or None,
    )
    book = CheckpointBook(
        layout=layout,
        directories=[config.adapter.checkpoint_dir],
        state_dir=config.state_dir,
        ledger=ledger,
        validator=client,
        keep_verified=config.checkpoints.keep_verified,
        record=apply,
    )
    try:
        await book.verify_all()
        if apply:
            for on_disk in book.scan():  # what a running supervisor keeps, plan --apply keeps too
                row = book.known(on_disk)
                if row is not None and row.ok:
                    await book.keep_copy(on_disk, row)
        the_plan = book.plan()
        if apply and the_plan.ok:
            run = ledger.run() if ledger is not None else None
            await book.apply(the_plan, run.attempt if run is not None else 0)
    finally:
        await client.close()
        if ledger is not None:
            ledger.close()
    return {**describe(the_plan), "applied": apply and the_plan.ok}


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
