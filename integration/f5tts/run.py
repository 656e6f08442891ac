"""`make integration`: the real F5-TTS trainer (f5-tts, unmodified, in its own venv) under
`train-supervisor run`, with faults injected from outside, judged from the trainer's own
output and files; then the same faults on a plain restart loop, the control, which must fail.

Faults, in order, in the supervised round and the first control (the same seeded plan):
  1. SIGKILL while model_last.pt is being rewritten (the file is watched as it grows);
  2. model_last.pt truncated to half while the trainer is down (before the relaunch);
  3. SIGKILL at a random moment;
  4. a NaN loss from update NAN_AT (the shim's switch, once over the whole round).
Judged: the trainer reaches its final update; no launch after a verified checkpoint
existed starts from update 0; the final model_last.pt loads and is finite; nothing
verified is lost (every verified model_<N>.pt is in the directory or in quarantine,
unless the trainer's own rotation removed it). A second control has the NaN alone: with
no torn file to crash-loop on, it finishes, with NaN weights.

    .venv/bin/python integration/f5tts/run.py --venv .venv-f5 [--seed N]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CONFIG_NAME = "tiny"  # tiny.yaml: 96 updates, model_last.pt every 5, model_<N>.pt every 20
SAVE_DIR = "ckpts/integration_tiny"
FINAL_UPDATE = 96
NAN_AT = 62
RELAUNCH_DELAY_S = 3.0  # both rounds wait this long before a relaunch: room to tear the file
ROUND_TIMEOUT_S = 420.0
MAX_RESTARTS = 8  # the control loop's limit


@dataclass
class Round:
    name: str
    log: Path
    checks: dict[str, str | None] = field(default_factory=dict)  # check -> None (ok) or why not

    @property
    def passed(self) -> bool:
        return all(v is None for v in self.checks.values())


def package_root(python: str) -> Path:
    code = "import importlib.util,os;s=importlib.util.find_spec('f5_tts');print(os.path.realpath(os.path.join(list(s.submodule_search_locations)[0],'..','..')))"
    return Path(
        subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    )


def trainer_env(work: Path) -> dict[str, str]:
    return {
        "PYTHONPATH": str(HERE / "shim"),
        "PYTHONUNBUFFERED": "1",
        "F5_SHIM_NAN_AT_UPDATE": str(NAN_AT),
        "F5_SHIM_NAN_ONCE_FILE": str(work / "nan.once"),
    }


def trainer_command(python: str) -> list[str]:
    return [python, "-m", "f5_tts.train.train", "--config-dir", str(HERE), "--config-name", CONFIG_NAME]


def trainer_pid(top: int) -> int | None:
    """The trainer's main process below `top` (its DataLoader workers share its command line)."""
    try:
        found = [
            p
            for p in psutil.Process(top).children(recursive=True)
            if "f5_tts.train.train" in " ".join(p.cmdline())
        ]
    except psutil.Error:
        return None
    pids = {p.pid for p in found}
    mains = [p.pid for p in found if p.ppid() not in pids]
    return mains[0] if mains else None


def wait_for(predicate, timeout_s: float, every_s: float = 0.05) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(every_s)
    return False


def inject(top: subprocess.Popen[bytes], ckpt: Path, rng: random.Random) -> list[str]:
    """Faults 1-3 (fault 4 is the shim's); what was done, for the report."""
    done: list[str] = []
    last = ckpt / "model_last.pt"
    if not wait_for(lambda: last.exists() and last.stat().st_size > 0, 240):
        return ["model_last.pt never appeared"]
    time.sleep(1.0)  # let the supervisor verify a first state
    full = last.stat().st_size
    pid = None

    def growing() -> bool:
        nonlocal pid
        pid = trainer_pid(top.pid)
        try:
            return 0 < last.stat().st_size < full
        except OSError:
            return False

    mid_save = wait_for(growing, 60, every_s=0.0005)
    if pid is not None:
        os.kill(pid, signal.SIGKILL)
        done.append(
            f"SIGKILL pid {pid} " + ("during a save of model_last.pt" if mid_save else "(no save caught)")
        )
        wait_for(
            lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, 10
        )
    with last.open("r+b") as fh:
        fh.truncate(last.stat().st_size // 2)
    done.append("model_last.pt truncated to half before the relaunch")
    torn_at = last.stat().st_mtime_ns if last.exists() else 0
    # A random moment of the relaunched trainer's training: after its first save.
    if wait_for(lambda: last.exists() and last.stat().st_mtime_ns != torn_at, 120):
        time.sleep(rng.uniform(0.0, 1.5))
        pid = trainer_pid(top.pid)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            done.append(f"SIGKILL pid {pid} at a random moment")
    return done


def supervised(python: str, work: Path, rng: random.Random) -> tuple[Round, list[str]]:
    config = work / "supervisor.toml"
    env = {**os.environ, **trainer_env(work)}
    init = [
        sys.executable,
        "-m",
        "supervisor.cli",
        "init",
        "--adapter",
        "f5-tts",
        "--cwd",
        str(work),
        "-o",
        str(config),
    ]
    made = subprocess.run(
        [*init, "--force", "--", *trainer_command(python)], env=env, capture_output=True, text=True
    )
    if made.returncode != 0:
        sys.exit(f"integration: init failed: {made.stdout}{made.stderr}")
    print(made.stdout.strip())
    text = config.read_text()
    text = text.replace(
        "[run]\n",
        f"[run]\nstate_dir = {json.dumps(str(work / 'state'))}\nenv = {toml_table(trainer_env(work))}\n",
        1,
    )
    text = text.replace(
        "[restart]\n",
        f"[restart]\nbackoff_initial_s = {RELAUNCH_DELAY_S}\nbackoff_max_s = {RELAUNCH_DELAY_S}\njitter = 0\n",
        1,
    )
    text += "\n[checkpoints]\nquiet_s = 0.2\n"
    config.write_text(text)
    top = subprocess.Popen(
        [sys.executable, "-m", "supervisor.cli", "run", "-c", str(config)],
        cwd=work,
        stdout=(work / "supervisor.out").open("wb"),
        stderr=subprocess.STDOUT,
    )
    faults = inject(top, package_root(python) / SAVE_DIR, rng)
    finish(top)
    return Round("train-supervisor run", work / "state" / "logs" / "trainer.log"), faults


def control(python: str, work: Path, rng: random.Random, *, kills: bool = True) -> tuple[Round, list[str]]:
    """The plain restart loop: relaunch on any failure, after the same delay. Without
    `kills`, only the NaN (fault 4): nothing tears a file, so the NaN is what shows."""
    log = work / "control.log"
    loop = (
        "import subprocess, sys, time\n"
        f"cmd = {trainer_command(python)!r}\n"
        f"for _ in range({MAX_RESTARTS + 1}):\n"
        "    if subprocess.call(cmd) == 0:\n        sys.exit(0)\n"
        f"    time.sleep({RELAUNCH_DELAY_S})\n"
        "sys.exit(1)\n"
    )
    env = {**os.environ, **trainer_env(work)}
    top = subprocess.Popen(
        [sys.executable, "-c", loop], cwd=work, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    faults = (
        inject(top, package_root(python) / SAVE_DIR, rng) if kills else [f"NaN loss from update {NAN_AT}"]
    )
    finish(top)
    return Round("plain restart loop (control)" + ("" if kills else ", NaN only"), log), faults


def control_nan_only(python: str, work: Path, rng: random.Random) -> tuple[Round, list[str]]:
    return control(python, work, rng, kills=False)


def finish(top: subprocess.Popen[bytes]) -> None:
    try:
        top.wait(ROUND_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        top.send_signal(signal.SIGTERM)
        top.wait(60)


def toml_table(values: dict[str, str]) -> str:
    return "{ " + ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in values.items()) + " }"


def judge(r: Round, ckpt: Path, work: Path) -> None:
    output = r.log.read_text(errors="replace").replace("\r", "\n") if r.log.exists() else ""
    r.checks["reaches its final update"] = (
        None
        if f"Saved last checkpoint at update {FINAL_UPDATE}" in output
        else "never saved its final update"
    )
    launches = output.split("Using logger:")[1:]
    firsts = [int(m.group(1)) if (m := re.search(r"update=(\d+)\]", part)) else None for part in launches]
    fresh = [i + 1 for i, first in enumerate(firsts) if i > 0 and first is not None and first <= 1]
    r.checks["never restarts from update 0"] = f"launches {fresh} started at update 1" if fresh else None
    r.checks["final model_last.pt loads and is finite"] = final_state(ckpt / "model_last.pt")
    ledger = work / "state" / "ledger.sqlite3"
    if ledger.exists():
        r.checks["nothing verified is lost"] = lost(ledger, ckpt, work / "state" / "quarantine", output)
    r.checks_seen = firsts  # type: ignore[attr-defined]


def final_state(path: Path) -> str | None:
    try:
        saved = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:
        return f"does not load: {str(exc).splitlines()[0][:120]}"
    bad = [
        k
        for k, t in saved["model_state_dict"].items()
        if t.is_floating_point() and not bool(t.isfinite().all())
    ]
    if bad:
        return f"update {saved.get('update')}: {len(bad)} tensors not finite"
    return None if saved.get("update") == FINAL_UPDATE else f"ends at update {saved.get('update')}"


def lost(ledger: Path, ckpt: Path, quarantine: Path, output: str) -> str | None:
    from supervisor.ledger import Ledger

    opened = Ledger.open_readonly(ledger.parent)
    rows = [(row.path,) for row in (opened.verdicts() if opened is not None else []) if row.ok]
    kept = {p.name for p in ckpt.glob("model_*.pt")} | {p.name for p in quarantine.glob("*/model_*.pt")}
    rotated = set(re.findall(r"Removed old checkpoint: (model_\d+\.pt)", output))
    missing = sorted({Path(str(path)).name for (path,) in rows} - kept - rotated - {"model_last.pt"})
    return f"gone: {missing}" if missing else None


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--venv", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=int(time.time()) % 10000)
    args = parser.parse_args()
    python = str(args.venv.resolve() / "bin" / "python")
    started = time.monotonic()
    print(f"integration: seed {args.seed}; F5-TTS below {package_root(python)}")
    subprocess.run([python, str(HERE / "make_data.py")], check=True, cwd=tempfile.gettempdir())
    ckpt = package_root(python) / SAVE_DIR
    rounds: list[tuple[Round, list[str]]] = []
    for run_round in (supervised, control, control_nan_only):
        shutil.rmtree(ckpt, ignore_errors=True)  # the tier's own directory, made by the tier
        work = Path(tempfile.mkdtemp(prefix=f"f5-{run_round.__name__}-"))
        r, faults = run_round(python, work, random.Random(args.seed))
        judge(r, ckpt, work)
        rounds.append((r, faults))
        print(f"\n{r.name}: {'PASSED' if r.passed else 'FAILED'}  ({work})")
        for fault in faults:
            print(f"  fault: {fault}")
        print(f"  first update of each launch: {r.checks_seen}")  # type: ignore[attr-defined]
        for check, why in r.checks.items():
            print(f"  {'ok  ' if why is None else 'FAIL'} {check}" + (f": {why}" if why else ""))
    ours, controls = rounds[0][0], [r for r, _ in rounds[1:]]
    took = time.monotonic() - started
    failing = all(not r.passed for r in controls)
    print(
        f"\nintegration: {took:.0f}s; supervised {'passed' if ours.passed else 'FAILED'}, "
        f"controls {'failed as they must' if failing else 'one PASSED, which it must not'}"
    )
    return 0 if ours.passed and failing else 1


if __name__ == "__main__":
    sys.exit(main())
