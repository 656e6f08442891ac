"""Power loss, as near as a test can get: the supervisor, its validator and the trainer
are all stopped and SIGKILLed at the same instant, at random moments and at moments
aimed at a save or a verified copy in progress; the supervisor is started again, many
times over. The run must complete, never silently start over, and never lose a
checkpoint that was verified."""

from __future__ import annotations

import os
import random
import re
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from supervisor.process.sessions import marked_processes
from tests.support.power_cut import power_cut, powercut_config
from tests.support.twins import CLI, run_cli

pytestmark = pytest.mark.timeout(300)

STEPS = 300
CUTS = 8


def first_seen(paths: Callable[[], set[Path]], supervisor: subprocess.Popen[bytes], limit_s: float) -> None:
    """Return as soon as a path not there before appears (or the limit passes, or the
    supervisor ends)."""
    before = paths()
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and supervisor.poll() is None:
        if paths() - before:
            return
        time.sleep(0.002)


def cut_moments(rng: random.Random, checkpoints: Path, state: Path) -> list[tuple[str, Callable[..., None]]]:
    """Where each cut falls: at random, when a save starts, when the torn file that cut
    left is being moved aside (a quarantine entry appears), when a verified copy starts."""

    def at_random(supervisor: subprocess.Popen[bytes]) -> None:
        time.sleep(rng.uniform(0.2, 4.0))

    def mid_save(supervisor: subprocess.Popen[bytes]) -> None:
        first_seen(lambda: set(checkpoints.glob("ckpt_*.pt")), supervisor, 15)

    def mid_move(supervisor: subprocess.Popen[bytes]) -> None:
        first_seen(lambda: set((state / "quarantine").rglob("*")), supervisor, 3)

    def mid_copy(supervisor: subprocess.Popen[bytes]) -> None:
        first_seen(lambda: set((state / "verified").rglob("*")), supervisor, 15)

    kinds = [("random", at_random), ("mid-save", mid_save), ("mid-move", mid_move), ("mid-copy", mid_copy)]
    return [kinds[n % len(kinds)] for n in range(CUTS)]


def attempts_said(trainer_log: Path) -> dict[int, str]:
    """What each attempt's trainer said first about where it starts."""
    said: dict[int, str] = {}
    attempt = 0
    for line in trainer_log.read_text(errors="replace").splitlines():
        if m := re.match(r"=== train-supervisor: attempt (\d+) ===", line):
            attempt = int(m[1])
        elif line.startswith(("resumed from", "no checkpoint found", "failed to load")):
            said.setdefault(attempt, line)
    return said


def test_killing_everything_at_random_moments_never_loses_verified_state(tmp_path: Path) -> None:
    seed = int.from_bytes(os.urandom(4))
    rng = random.Random(seed)
    checkpoints = tmp_path / "run" / "checkpoints"
    config = powercut_config(
        tmp_path, STEPS, restart={"backoff_initial_s": 0, "max_attempts_without_progress": 100}
    )
    state = tmp_path / "state"
    cuts = []
    for kind, wait in cut_moments(rng, checkpoints, state):
        with (tmp_path / "supervisor.out").open("ab") as out:
            supervisor = subprocess.Popen([*CLI, "run", "-c", str(config)], stdout=out, stderr=out)
        wait(supervisor)
        if supervisor.poll() is not None:
            break  # the run finished before this cut
        power_cut(supervisor)
        cuts.append(kind)
    context = f"seed {seed}, cuts {cuts}"

    final = run_cli("run", "-c", str(config), timeout=240)
    assert final.returncode == 0, f"{context}\n{final.stdout[-3000:]}"
    assert len(cuts) >= 4, f"the run outpaced the cuts: {context}"
    with sqlite3.connect(state / "ledger.sqlite3") as ledger:
        verified_steps = {s for (s,) in ledger.execute("SELECT DISTINCT step FROM checkpoints WHERE ok = 1")}
        plans = dict(ledger.execute("SELECT attempt, target_step FROM plans WHERE ok = 1 ORDER BY id"))
        started = dict(ledger.execute("SELECT n, started_at FROM attempts"))
        first_ok = ledger.execute("SELECT MIN(verified_at) FROM checkpoints WHERE ok = 1").fetchone()[0]
        markers = [m for (m,) in ledger.execute("SELECT marker FROM attempts")]
        recorded_moves = {m for (m,) in ledger.execute("SELECT moved_to FROM quarantined")}

    said = attempts_said(state / "logs" / "trainer.log")
    for attempt, line in said.items():
        assert not line.startswith("failed to load"), f"attempt {attempt} was handed a broken file: {context}"
        if line.startswith("no checkpoint found"):
            assert started[attempt] < first_ok, (
                f"attempt {attempt} started over after a verification: {context}"
            )
        else:
            assert line == f"resumed from ckpt_{plans[attempt]}.pt at step {plans[attempt]}", context

    # Nothing verified is lost: every verified step is still there, whole.
    assert STEPS in verified_steps
    for step in sorted(verified_steps):
        saved = torch.load(checkpoints / f"ckpt_{step}.pt", weights_only=True)
        assert saved["step"] == step, context
    moved = {str(p) for p in (state / "quarantine").glob("*/*") if p.suffix != ".json"}
    assert moved <= recorded_moves, f"every file moved aside is in the ledger: {context}"
    leftovers = [p for p in tmp_path.rglob("*") if p.name.endswith((".partial", ".tmp"))]
    assert leftovers == [], context
    assert [pid for marker in markers for pid in marked_processes(marker)] == [], context
