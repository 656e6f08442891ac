"""The demo's closing account: per attempt, what happened, what the supervisor did, and
how many steps were lost, read from the run's ledger and the trainer's log."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from supervisor.ledger import AttemptRow, Ledger

ATTEMPT_HEADER = re.compile(r"=== train-supervisor: attempt (\d+) ===")
TRAINER_STEP = re.compile(r"step (\d+)\b")  # the demo trainer's "step 23 loss 0.1234"
DETAIL_WIDTH = 100  # the whole detail is in `train-supervisor status`
HEADING = (
    "What happened, what the supervisor did, and the steps lost (the last step an attempt\n"
    "printed minus the verified step the next attempt resumed from):"
)


@dataclass(frozen=True)
class Move:
    name: str
    reason: str


@dataclass(frozen=True)
class PlanRow:
    """What the supervisor did before an attempt: the state it resumes from, and why."""

    target_step: int | None
    ok: bool
    moves: tuple[Move, ...]
    restored: tuple[str, ...]
    problem: str | None


def account(state_dir: Path, trainer_log: Path) -> list[str]:
    """The lines to print; empty if the run left no ledger."""
    ledger = Ledger.open_readonly(state_dir)
    if ledger is None:
        return []
    try:
        attempts = ledger.attempts()
        plans = plans_by_attempt(ledger)
    finally:
        ledger.close()
    reached = steps_reached(trainer_log)
    lines = [HEADING]
    lost_in_all = 0
    for attempt in attempts:
        lines.append(f"  #{attempt.n} {happened(attempt, reached.get(attempt.n))}")
        if (plan := plans.get(attempt.n + 1)) is not None:
            lost = steps_lost(reached.get(attempt.n), plan)
            lost_in_all += lost or 0
            lines += [f"     -> {action}" for action in did(plan, lost)]
    lines.append(f"In all: {len(attempts)} attempts, {lost_in_all} steps lost.")
    return lines


def happened(attempt: AttemptRow, reached: int | None) -> str:
    cause = attempt.cause.value if attempt.cause is not None else "no recorded end"
    where = f" at step {reached}" if reached is not None else ""
    how = f" ({attempt.status.describe()})" if attempt.status is not None else ""
    detail = attempt.detail or ""
    if len(detail) > DETAIL_WIDTH:
        detail = detail[: DETAIL_WIDTH - 3] + "..."
    return f"{cause}{where}{how}: {detail}" if detail else f"{cause}{where}{how}"


def did(plan: PlanRow, lost: int | None) -> list[str]:
    actions = [f"moved {m.name} aside: {m.reason}" for m in plan.moves]
    actions += [f"restored {name} from its verified copy" for name in plan.restored]
    if not plan.ok:
        return [*actions, f"refused to relaunch: {plan.problem}"]
    start = (
        "scratch (nothing verified yet)" if plan.target_step is None else f"verified step {plan.target_step}"
    )
    lost_text = f"; {lost} step{'' if lost == 1 else 's'} lost" if lost is not None else ""
    return [*actions, f"relaunched from {start}{lost_text}"]


def steps_lost(reached: int | None, next_plan: PlanRow) -> int | None:
    if reached is None or not next_plan.ok:
        return None
    return max(0, reached - (next_plan.target_step or 0))


def steps_reached(trainer_log: Path) -> dict[int, int]:
    """The last step each attempt printed, by attempt (the supervisor heads each
    attempt's output in the log)."""
    reached: dict[int, int] = {}
    attempt = None
    text = trainer_log.read_text(errors="replace") if trainer_log.exists() else ""
    for line in text.splitlines():
        if header := ATTEMPT_HEADER.fullmatch(line):
            attempt = int(header.group(1))
        elif attempt is not None and (step := TRAINER_STEP.match(line)):
            reached[attempt] = int(step.group(1))
    return reached


def plans_by_attempt(ledger: Ledger) -> dict[int, PlanRow]:
    """The last plan made before each attempt."""
    return {attempt: plan_row(target, ok, detail) for attempt, target, ok, detail in ledger.plans()}


def plan_row(target_step: int | None, ok: bool, detail_json: str) -> PlanRow:
    detail = json.loads(detail_json)
    return PlanRow(
        target_step=target_step,
        ok=ok,
        moves=tuple(Move(Path(m["path"]).name, m["reason"]) for m in detail.get("moves", [])),
        restored=tuple(Path(r["to"]).name for r in detail.get("restores", [])),
        problem=detail.get("problem"),
    )
