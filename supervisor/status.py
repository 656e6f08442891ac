"""`train-supervisor status`: what the ledger says, as a dict (for --json) or a table."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from supervisor.config import Config
from supervisor.ledger import AttemptRow, Ledger
from supervisor.lock import LOCK_FILE, holder_pid

RECENT_ATTEMPTS = 10
RECENT_EVENTS = 12


def report(config: Config) -> dict[str, Any]:
    pid = holder_pid(config.state_dir / LOCK_FILE)
    base: dict[str, Any] = {
        "run": config.name,
        "config": str(config.path),
        "state_dir": str(config.state_dir),
        "trainer_log": str(config.trainer_log),
        "supervisor_running": pid is not None,
        "supervisor_pid": pid or None,
    }
    ledger = Ledger.open_readonly(config.state_dir)
    run = ledger.run() if ledger is not None else None
    if ledger is None or run is None:
        return {**base, "state": "not_started", "attempt": 0, "restarts": 0, "attempts": [], "events": []}
    try:
        now = time.time()
        relaunch_in = max(0.0, run.relaunch_at - now) if run.relaunch_at is not None else None
        return {
            **base,
            "state": run.phase.value,
            "attempt": run.attempt,
            "restarts": max(0, run.attempt - 1),
            "last_cause": run.last_cause.value if run.last_cause else None,
            "last_exit": run.last_exit.describe() if run.last_exit else None,
            "exit_code": run.exit_code,
            "next_relaunch_at": _iso(run.relaunch_at),
            "next_relaunch_in_s": relaunch_in,
            "next_backoff_s": run.next_delay_s,
            "backoff_level": run.backoff_level,
            "attempts_without_progress": run.without_progress,
            "max_attempts_without_progress": config.restart.max_attempts_without_progress,
            "last_verified_step": run.best_step,
            "last_progress_age_s": round(now - run.last_progress_at, 1) if run.last_progress_at else None,
            "restarts_by_cause": ledger.causes(),
            "detectors": {
                "nan_rollbacks": run.carry.nan_rollbacks,
                "nan_remedy_on": run.carry.nan_remedy,
                "oom_cuda_rungs": run.carry.oom_cuda_level,
                "oom_host_rungs": run.carry.oom_host_level,
                "silent_resets_in_a_row": run.carry.silent_resets,
                "longest_progress_gap_s": run.carry.longest_gap_s,
            },
            "last_plan": _plan(ledger),
            "updated_at": _iso(run.updated_at),
            "attempts": [_attempt(a, now) for a in ledger.attempts(limit=RECENT_ATTEMPTS)],
            "events": [
                {
                    "at": _iso(e.at),
                    "attempt": e.attempt,
                    "kind": e.kind,
                    "level": e.level,
                    "message": e.message,
                }
                for e in ledger.events(limit=RECENT_EVENTS)
            ],
        }
    finally:
        ledger.close()


def _plan(ledger: Ledger) -> dict[str, Any] | None:
    last = ledger.last_plan()
    if last is None:
        return None
    at, attempt, summary = last
    return {"at": _iso(at), "attempt": attempt, "summary": summary}


def _attempt(a: AttemptRow, now: float) -> dict[str, Any]:
    return {
        "n": a.n,
        "pid": a.pid,
        "started_at": _iso(a.started_at),
        "ended_at": _iso(a.ended_at),
        "ran_s": round((a.ended_at or now) - a.started_at, 3),
        "cause": a.cause.value if a.cause else None,
        "exit": a.status.describe() if a.status else None,
        "stable": a.stable,
        "detail": a.detail,
    }


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds") if ts is not None else None


def render(data: dict[str, Any]) -> None:
    """Print the report for a person (rich is imported here only: the daemon never needs it)."""
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    supervisor = f"running (pid {data['supervisor_pid']})" if data["supervisor_running"] else "not running"
    summary = Table.grid(padding=(0, 2))
    summary.add_row("run", data["run"])
    summary.add_row("state", f"[bold]{data['state']}[/]   supervisor {supervisor}")
    if data["state"] != "not_started":
        summary.add_row("attempt", f"{data['attempt']}  ({data['restarts']} restarts)")
        if data["last_cause"]:
            summary.add_row("last exit", f"{data['last_cause']}: {data['last_exit'] or 'no exit status'}")
        if data["restarts_by_cause"]:
            by_cause = ", ".join(f"{cause} {n}" for cause, n in data["restarts_by_cause"].items())
            summary.add_row("ends by cause", by_cause)
        if data["last_progress_age_s"] is not None and data["state"] == "running":
            summary.add_row("last progress", f"{data['last_progress_age_s']:.0f}s ago")
        summary.add_row("next backoff", _next_backoff(data))
        verified = data["last_verified_step"]
        summary.add_row(
            "verified", f"step {verified}" if verified is not None else "no checkpoint verified yet"
        )
        if data["last_plan"]:
            summary.add_row("last plan", f"#{data['last_plan']['attempt']}: {data['last_plan']['summary']}")
        summary.add_row(
            "no progress",
            f"{data['attempts_without_progress']} of {data['max_attempts_without_progress']} attempts "
            "before giving up",
        )
    summary.add_row("trainer log", data["trainer_log"])
    console.print(summary)
    if data["attempts"]:
        table = Table(title="attempts", title_justify="left")
        for column in ("#", "started", "ran", "cause", "exit", "detail"):
            table.add_column(column, overflow="fold")
        for a in data["attempts"]:
            started = (a["started_at"] or "")[11:19]
            cause = a["cause"] or ("running" if data["supervisor_running"] else "unknown")
            table.add_row(
                str(a["n"]), started, f"{a['ran_s']:.1f}s", cause, a["exit"] or "", a["detail"] or ""
            )
        console.print(table)
    if data["events"]:
        console.print("[bold]recent events[/]")
        for e in data["events"]:
            console.print(f"  {(e['at'] or '')[11:19]}  #{e['attempt']:<3} {e['message']}")


def _next_backoff(data: dict[str, Any]) -> str:
    if data["state"] == "backoff" and data["next_relaunch_in_s"] is not None:
        return f"relaunch in {data['next_relaunch_in_s']:.1f}s (at {data['next_relaunch_at']})"
    if data["state"] in ("completed", "stopped", "gave_up"):
        return "none (finished)"
    return f"{data['next_backoff_s']:g}s after the next failure (before jitter)"
