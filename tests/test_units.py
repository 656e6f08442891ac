"""The systemd units verify (`systemd-analyze verify`, system and user), with ExecStart
pointing at this venv's command as an installation would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).parent.parent / "systemd"
COMMAND = Path(sys.executable).parent / "train-supervisor"
ANALYZE = shutil.which("systemd-analyze")

pytestmark = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def installed(unit: str, placeholder: str, tmp_path: Path) -> Path:
    """The template as an instance file, its ExecStart on this venv's command."""
    text = (UNITS / unit).read_text().replace(placeholder, str(COMMAND))
    assert str(COMMAND) in text
    instance = tmp_path / unit.replace("@.", "@ljs.")
    instance.write_text(text)
    return instance


def verify(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run(
        [ANALYZE, *args], capture_output=True, text=True, timeout=60, check=False, env=env, cwd="/"
    )


def test_the_system_unit_verifies(tmp_path: Path) -> None:
    unit = installed("train-supervisor@.service", "/usr/local/bin/train-supervisor", tmp_path)
    result = verify("verify", str(unit))
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr


def test_the_user_unit_verifies(tmp_path: Path) -> None:
    unit = installed("train-supervisor-user@.service", "%h/.local/bin/train-supervisor", tmp_path)
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    result = verify("--user", "verify", str(unit), env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)})
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr


def test_a_missing_command_fails_verification(tmp_path: Path) -> None:
    """The check above can fail: a unit whose ExecStart does not exist does not verify."""
    unit = tmp_path / "train-supervisor@ljs.service"
    unit.write_text((UNITS / "train-supervisor@.service").read_text())  # /usr/local/bin: not here
    if Path("/usr/local/bin/train-supervisor").exists():
        pytest.skip("train-supervisor is installed in /usr/local/bin on this machine")
    assert verify("verify", str(unit)).returncode != 0


def test_the_units_say_what_the_supervisor_relies_on() -> None:
    for unit in ("train-supervisor@.service", "train-supervisor-user@.service"):
        lines = set((UNITS / unit).read_text().splitlines())
        for setting in (
            "Type=notify",
            "NotifyAccess=main",
            "Restart=on-failure",
            "RestartPreventExitStatus=2 3",
            "KillMode=mixed",
            "OOMPolicy=continue",
        ):
            assert setting in lines, (unit, setting)
