"""`train-supervisor status`: what the run's ledger says, with the running supervisor's
live numbers over it (from its status socket), as a dict (for --json) or a table."""

from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from supervisor.cli.plain_text import BOLD, RED, styled, table, visible, width
from supervisor.config.run_place import RunPlace
from supervisor.ledger import AttemptRow, Ledger, RunRow
from supervisor.outputs.status_fetch import LiveUnavailable, fetch
from supervisor.process.lock import LOCK_FILE, holder_pid
from supervisor.process.procfs import start_ticks

RECENT_ATTEMPTS = 10
RECENT_EVENTS = 12
# Problems that stand until the user acts, shown above everything else: the newest of
# each kind, from the run's last attempt.
STANDING_PROBLEMS = ("saves_not_landing", "final_state_unsettled")
LIVE_TIMEOUT_S = 2.0
# Report keys the live status replaces, and its names for them.
FROM_LIVE = {
    "state": "phase",
    "attempt": "attempt",
    "uptime_s": "uptime_s",
    "trainer_pid": "trainer_pid",
    "last_cause": "last_cause",
    "last_progress_age_s": "last_progress_age_s",
    "last_progress_sign": "last_progress_sign",
    "last_verified_step": "best_step",
    "next_relaunch_in_s": "next_relaunch_in_s",
    "next_backoff_s": "next_backoff_s",
    "attempts_without_progress": "attempts_without_progress",
    "restarts_by_cause": "restarts_by_cause",
}


def report(place: RunPlace, live_timeout_s: float = LIVE_TIMEOUT_S) -> dict[str, Any]:
    pid = holder_pid(place.state_dir / LOCK_FILE)
    live, live_note = None, None
    if pid is not None:
        try:
            live = fetch(place.state_dir, live_timeout_s)
        except LiveUnavailable as exc:
            live_note = (
                f"live status unavailable: {exc}; numbers from the ledger (progress times lag up to 5s)"
            )
    started_at = _process_started_at(pid) if pid is not None else None
    base: dict[str, Any] = {
        "run": place.name,
        "config": str(place.path),
        "state_dir": str(place.state_dir),
        "trainer_log": str(place.trainer_log),
        "supervisor_running": pid is not None,
        "supervisor_pid": pid or None,
        "supervisor_started_at": _iso(started_at),
        "uptime_s": round(time.time() - started_at, 1) if started_at is not None else None,
        "source": "ledger",
        "live_note": live_note,
    }
    ledger = Ledger.open_readonly(place.state_dir)
    if ledger is None:
        return _not_started(base)
    try:
        run = ledger.run()
        if run is None:
            return _not_started(base)
        data = {**base, **_from_ledger(place, ledger, run)}
        if live is not None:
            data = _with_live(data, live)
        data["last_verified_at"] = _verified_at(ledger, data["last_verified_step"])
        return data
    finally:
        ledger.close()


def _not_started(base: dict[str, Any]) -> dict[str, Any]:
    return {
        **base,
        "state": "not_started",
        "attempt": 0,
        "restarts": 0,
        "trainer_pid": None,
        "last_progress_age_s": None,
        "last_progress_sign": None,
        "last_verified_step": None,
        "last_verified_at": None,
        "attempts": [],
        "events": [],
    }


def _from_ledger(place: RunPlace, ledger: Ledger, run: RunRow) -> dict[str, Any]:
    now = time.time()
    relaunch_in = max(0.0, run.relaunch_at - now) if run.relaunch_at is not None else None
    return {
        "state": run.phase.value,
        "attempt": run.attempt,
        "restarts": max(0, run.attempt - 1),
        "trainer_pid": None,
        "last_cause": run.last_cause.value if run.last_cause else None,
        "last_exit": run.last_exit.describe() if run.last_exit else None,
        "exit_code": run.exit_code,
        "next_relaunch_at": _iso(run.relaunch_at),
        "next_relaunch_in_s": relaunch_in,
        "next_backoff_s": run.next_delay_s,
        "backoff_level": run.backoff_level,
        "attempts_without_progress": run.without_progress,
        "max_attempts_without_progress": place.max_attempts_without_progress,
        "last_verified_step": run.best_step,
        "last_progress_age_s": round(now - run.last_progress_at, 1) if run.last_progress_at else None,
        "last_progress_sign": None,
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
        "problems": _problems(ledger),
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


def _with_live(data: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
    """The ledger's report with the running supervisor's own numbers over it."""
    merged = {
        **data,
        **{key: live[name] for key, name in FROM_LIVE.items() if name in live},
        "source": "live",
    }
    merged["restarts"] = max(0, merged["attempt"] - 1)
    if isinstance(live.get("started_at"), int | float):
        merged["supervisor_started_at"] = _iso(live["started_at"])
    relaunch_in = merged["next_relaunch_in_s"]
    merged["next_relaunch_at"] = _iso(time.time() + relaunch_in) if relaunch_in is not None else None
    return merged


def _verified_at(ledger: Ledger, step: int | None) -> str | None:
    """When the newest verified state was verified (its last file, for paired layouts)."""
    if step is None:
        return None
    verdicts = ledger.verified_at_step(step)
    return _iso(max(v.verified_at for v in verdicts)) if verdicts else None


def _process_started_at(pid: int) -> float | None:
    """When a process started (wall time), from its start in clock ticks after boot."""
    ticks = start_ticks(pid)
    try:
        since_boot = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return time.time() - since_boot + ticks / os.sysconf("SC_CLK_TCK") if ticks is not None else None


def _problems(ledger: Ledger) -> list[str]:
    events = ledger.events(limit=RECENT_EVENTS * 4)
    last = max((e.attempt for e in events), default=None)
    newest: dict[str, str] = {}
    for e in events:  # oldest first: the newest of a kind wins
        if e.kind in STANDING_PROBLEMS and e.attempt == last:
            newest[e.kind] = e.message
    return list(newest.values())


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
    """Print the report for a person: plain text, the trainer's words made printable."""
    summary = _summary(data)
    pad = max(len(name) for name, _ in summary) + 2
    lines = [f"{name:<{pad}}{_shown(name, visible(value))}" for name, value in summary]
    lines += [f"{styled('PROBLEM', BOLD, RED)} {visible(problem)}" for problem in data.get("problems", [])]
    if data["attempts"]:
        header = ("#", "started", "ran", "cause", "exit", "detail")
        body = [
            (
                str(a["n"]),
                (a["started_at"] or "")[11:19],
                f"{a['ran_s']:.1f}s",
                a["cause"] or ("running" if data["supervisor_running"] else "unknown"),
                visible(a["exit"] or ""),
                visible(a["detail"] or ""),
            )
            for a in data["attempts"]
        ]
        lines += ["", styled("attempts", BOLD), *table(header, body, width())]
    if data["events"]:
        lines += ["", styled("recent events", BOLD)]
        lines += [
            f"  {(e['at'] or '')[11:19]}  #{e['attempt']:<3} {visible(e['message'])}" for e in data["events"]
        ]
    print("\n".join(lines))


def _shown(name: str, value: str) -> str:
    """The state's name in bold (on a terminal that wants it)."""
    if name != "state":
        return value
    state, _, rest = value.partition(" ")
    return f"{styled(state, BOLD)} {rest}"


def _summary(data: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, value) rows of the summary."""
    rows = [("run", data["run"]), ("state", f"{data['state']}   supervisor {_supervisor(data)}")]
    if data["live_note"]:
        rows.append(("note", data["live_note"]))
    if data["state"] == "not_started":
        return [*rows, ("trainer log", data["trainer_log"])]
    trainer = f", trainer pid {data['trainer_pid']}" if data["trainer_pid"] else ""
    rows.append(("attempt", f"{data['attempt']}  ({data['restarts']} restarts){trainer}"))
    if data["last_cause"]:
        rows.append(("last exit", f"{data['last_cause']}: {data['last_exit'] or 'no exit status'}"))
    if data["restarts_by_cause"]:
        rows.append(("ends by cause", ", ".join(f"{c} {n}" for c, n in data["restarts_by_cause"].items())))
    if data["last_progress_age_s"] is not None and data["state"] == "running":
        sign = f" ({data['last_progress_sign']})" if data["last_progress_sign"] else ""
        rows.append(("last progress", f"{_duration(data['last_progress_age_s'])} ago{sign}"))
    rows.append(("next backoff", _next_backoff(data)))
    rows.append(("verified", _verified(data)))
    if data["last_plan"]:
        rows.append(("last plan", f"#{data['last_plan']['attempt']}: {data['last_plan']['summary']}"))
    rows.append(
        (
            "no progress",
            f"{data['attempts_without_progress']} of {data['max_attempts_without_progress']} attempts "
            "before giving up",
        )
    )
    return [*rows, ("trainer log", data["trainer_log"])]


def _supervisor(data: dict[str, Any]) -> str:
    if not data["supervisor_running"]:
        return "not running"
    up = f", up {_duration(data['uptime_s'])}" if data["uptime_s"] is not None else ""
    return f"running (pid {data['supervisor_pid']}{up})"


def _verified(data: dict[str, Any]) -> str:
    step, at = data["last_verified_step"], data["last_verified_at"]
    if step is None:
        return "no checkpoint verified yet"
    return f"step {step}, at {at}" if at else f"step {step}"


def _duration(seconds: float) -> str:
    """3.2s, 12m 03s, 5h 02m, 2d 04h."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours:02d}h"
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


def _next_backoff(data: dict[str, Any]) -> str:
    if data["state"] == "backoff" and data["next_relaunch_in_s"] is not None:
        return f"relaunch in {data['next_relaunch_in_s']:.1f}s (at {data['next_relaunch_at']})"
    if data["state"] in ("completed", "stopped", "gave_up"):
        return "none (finished)"
    return f"{data['next_backoff_s']:g}s after the next failure (before jitter)"
