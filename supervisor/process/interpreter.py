"""Which Python runs the trainer, and which versions of torch and Lightning it has: what
decides whether the trainer's own `torch.load` is weights-only (torch >= 2.6 by default;
Lightning >= 2.6 leaves it to torch, earlier Lightning asked for a full unpickle).

Asked once, of the interpreter the command would run (`python ...`, or the script a
`#!` line names), reading package metadata only: nothing of the trainer is imported.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

PROBE_TIMEOUT_S = 30.0  # a loaded machine starts a Python in well under that
SHIM_DIR = Path(__file__).with_name("trainer_shim")  # its sitecustomize.py
SAFE_GLOBALS_ENV = "TRAIN_SUPERVISOR_SAFE_GLOBALS"
PACKAGES = ("torch", "pytorch-lightning", "lightning")
_PROBE = (
    "import importlib.metadata as m, json\n"
    "def v(name):\n"
    "    try:\n        return m.version(name)\n    except m.PackageNotFoundError:\n        return None\n"
    f"print(json.dumps({{n: v(n) for n in {list(PACKAGES)!r}}}))"
)
PYTHON_NAME = re.compile(r"python[0-9.]*")


def trainer_python(command: Sequence[str], cwd: Path, env: Mapping[str, str]) -> str | None:
    """The interpreter that runs the trainer's command, where it can be told."""
    if not command:
        return None
    program = command[0]
    if "/" in program:
        found: str | None = program if os.path.isabs(program) else str(cwd / program)
    else:
        found = shutil.which(program, path=env.get("PATH", os.defpath))
    if found is None:
        return None
    if PYTHON_NAME.fullmatch(Path(found).name):
        return found
    try:
        with open(found, "rb") as fh:
            first = fh.readline(256)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    words = first[2:].decode(errors="replace").split()
    if words and Path(words[0]).name == "env" and len(words) > 1:
        return shutil.which(words[1], path=env.get("PATH", os.defpath))
    return words[0] if words and PYTHON_NAME.fullmatch(Path(words[0]).name) else None


def versions(python: str, cwd: Path, env: Mapping[str, str]) -> dict[str, str | None] | None:
    """{package: version or None} in that interpreter, run as the trainer runs (its cwd:
    a relative PYTHONPATH means what it means there); None when it cannot be asked."""
    try:
        found = ask(python, _PROBE, [], cwd, env)
    except InterpreterError:
        return None
    if not isinstance(found, dict):
        return None
    return {name: found.get(name) for name in PACKAGES}


def ask(python: str, code: str, argv: Sequence[str], cwd: Path, env: Mapping[str, str]) -> Any:
    """What `code`, run by the trainer's interpreter in its cwd and environment with the
    trainer's argv as JSON in sys.argv[1], prints as JSON. Raises InterpreterError."""
    try:
        done = subprocess.run(
            [python, "-c", code, json.dumps(list(argv))],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            cwd=cwd,
            env=dict(env),
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InterpreterError(f"cannot run {python}: {exc}") from None
    try:
        return json.loads(done.stdout)
    except ValueError:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise InterpreterError(f"{python} could not tell (exit {done.returncode}): {last}") from None


class InterpreterError(Exception):
    """The trainer's interpreter could not be asked (one line)."""


def shim_env(allowed: Sequence[str], pythonpath: str) -> dict[str, str]:
    """What puts the opt-in sitecustomize (`trainer_safe_globals`) into a trainer's
    process: it allows exactly `allowed` to its weights-only torch.load."""
    return {
        "PYTHONPATH": os.pathsep.join(p for p in (str(SHIM_DIR), pythonpath) if p),
        SAFE_GLOBALS_ENV: ",".join(allowed),
    }


def shim_in(env: Mapping[str, str], needs: Sequence[str]) -> bool:
    """`env` (a trainer started by hand) carries the shim allowing every one of `needs`."""
    on_path = str(SHIM_DIR) in env.get("PYTHONPATH", "").split(os.pathsep)
    return on_path and set(needs) <= set(env.get(SAFE_GLOBALS_ENV, "").split(","))
