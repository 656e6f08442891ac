"""The systemd units verify (`systemd-analyze verify`, system and user), with ExecStart
pointing at this venv's command as an installation would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from supervisor import config as config_module
from supervisor.cli import service
from tests.support.load import scaled

ROOT = Path(__file__).parents[2]
UNITS = Path(__file__).parents[2] / "supervisor" / "cli" / "units"
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
        [ANALYZE, *args], capture_output=True, text=True, timeout=scaled(60), check=False, env=env, cwd="/"
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


# --- install-service ---------------------------------------------------------------------------


def run_config(tmp_path: Path) -> Path:
    config = tmp_path / "ljs.toml"
    config.write_text(f'[run]\ncommand = ["{sys.executable}", "-c", "pass"]\n[stop]\ngrace_s = 45\n')
    return config


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "supervisor.cli", *args],
        capture_output=True,
        text=True,
        timeout=scaled(60),
        check=False,
        env=env,
    )


def test_install_service_writes_a_unit_and_drop_in_that_verify(tmp_path: Path) -> None:
    config = run_config(tmp_path)
    units = tmp_path / "units"
    result = cli("install-service", "-c", str(config), "--unit-dir", str(units))
    assert result.returncode == 0, result.stderr
    assert f"wrote {units / 'train-supervisor@.service'}" in result.stdout
    drop_in = (units / "train-supervisor@ljs.service.d" / "train-supervisor.conf").read_text()
    assert f'Environment="TRAIN_SUPERVISOR_CONFIG={config}"' in drop_in
    assert f'ExecStart="{sys.executable}" -m supervisor.cli run -c ${{TRAIN_SUPERVISOR_CONFIG}}' in drop_in
    assert "TimeoutStopSec=105" in drop_in  # above the run's 45 s of grace
    # The template's own ExecStart (/usr/local/bin) is replaced by the drop-in: it verifies.
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{units}:"}
    verified = verify("verify", "train-supervisor@ljs.service", env=env)
    assert verified.returncode == 0, verified.stderr


def test_install_service_dry_run_changes_nothing_and_says_what_it_would_do(tmp_path: Path) -> None:
    config = run_config(tmp_path)
    home = tmp_path / "config-home"
    env = {**os.environ, "XDG_CONFIG_HOME": str(home)}
    result = cli("install-service", "-c", str(config), "--user", "--dry-run", env=env)
    assert result.returncode == 0, result.stderr
    assert f"# {home / 'systemd' / 'user' / 'train-supervisor-user@.service'}" in result.stdout
    assert "$ systemctl --user enable --now train-supervisor-user@ljs.service" in result.stdout
    assert "[Install]\nWantedBy=default.target" in result.stdout
    assert not home.exists()


def test_install_service_refuses_a_broken_config(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[run]\n")
    result = cli("install-service", "-c", str(config), "--unit-dir", str(tmp_path / "units"))
    assert result.returncode == 2
    assert "run.command" in result.stderr
    assert not (tmp_path / "units").exists()


@pytest.mark.slow
def test_the_unit_files_ship_in_the_wheel(tmp_path: Path) -> None:
    """The units are package data: an installed package (not this checkout) has them."""
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {
        "supervisor/cli/units/train-supervisor@.service",
        "supervisor/cli/units/train-supervisor-user@.service",
    } <= names


HOSTILE = 'evil "dir %h $HOME\\x'  # a quote, a specifier, a variable, a backslash, spaces
PROGRAM_DIR = "py dir %h $HOME"  # what systemd allows in a program's path: no quote, no backslash


def test_install_service_refuses_a_path_with_a_newline_before_writing_anything(tmp_path: Path) -> None:
    """A newline in the config's path would start a new directive: ExecStartPre=+... runs as
    root whatever User= says."""
    folder = tmp_path / "runs\nExecStartPre=+touch PWNED"
    folder.mkdir()
    config = run_config(folder)
    result = cli("install-service", "-c", str(config), "--unit-dir", str(tmp_path / "units"))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "control character" in result.stderr
    assert not (tmp_path / "units").exists()


def test_install_service_quotes_hostile_paths_so_systemd_reads_them_back_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `"` in the config's path must not close the quoted value (and let a further
    LD_PRELOAD=... in); `%h` and `$HOME` must not expand. systemd-analyze checks that the
    ExecStart program exists: it does only at the exact path, `%h` and all."""
    folder = tmp_path / HOSTILE
    folder.mkdir()
    config = run_config(folder)
    (tmp_path / PROGRAM_DIR).mkdir()
    python = tmp_path / PROGRAM_DIR / "python3"
    python.symlink_to(sys.executable)
    monkeypatch.setattr(sys, "executable", str(python))
    loaded = config_module.load(config, for_launch=False)
    units = tmp_path / "units"
    service.install(service.plan(loaded, user=False, unit_dir=units), enable=False)
    drop_in_path = units / "train-supervisor@ljs.service.d" / "train-supervisor.conf"
    drop_in = drop_in_path.read_text()
    environment = next(line for line in drop_in.splitlines() if line.startswith("Environment="))
    assert (
        environment
        == 'Environment="TRAIN_SUPERVISOR_CONFIG='
        + str(config).replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
        + '"'
    )
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{units}:"}
    verified = verify("verify", "train-supervisor@ljs.service", env=env)
    assert verified.returncode == 0, verified.stderr
    # Left unescaped, %h is read as a specifier: the program is not found. The check can fail.
    drop_in_path.write_text(drop_in.replace("%%h", "%h"))
    assert verify("verify", "train-supervisor@ljs.service", env=env).returncode != 0


def test_install_service_refuses_a_python_path_systemd_cannot_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = config_module.load(run_config(tmp_path), for_launch=False)
    monkeypatch.setattr(sys, "executable", str(tmp_path / 'a"b' / "python3"))
    with pytest.raises(service.UnitError, match="refuses in a program name"):
        service.plan(loaded, user=False, unit_dir=tmp_path / "units")
