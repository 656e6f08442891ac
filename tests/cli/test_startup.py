"""What the commands import: `--help` loads click and the command modules, not the rest;
`config check` loads the config's own adapter only, and nothing that logs or runs things
(nor the core's decisions); `status` reads the ledger without logging, serving or the config's model;
`verify`'s validator worker loads torch and the checks, not the client side. Each command
imports what it needs when it runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import trainer_adapters
from tests.support.ckpt_factory import write_torch

HEAVY = (
    "pydantic",
    "structlog",
    "trainer_adapters",
    "asyncio",
    "watchdog",
    "apscheduler",
    "sqlite3",
    "rich",
    "psutil",
    "torch",
)
ADAPTER_MODULES = tuple(f"trainer_adapters.{name.replace('-', '_')}" for name in trainer_adapters.names())


def imported(*argv: str, among: tuple[str, ...]) -> tuple[str, list[str]]:
    """Run the command in a fresh interpreter: its output, and which of `among` it imported."""
    code = (
        "import json, sys\n"
        f"sys.argv = ['train-supervisor', *{list(argv)!r}]\n"
        "from supervisor.cli import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    assert exc.code in (0, None), exc.code\n"
        f"print(json.dumps(sorted(m for m in {among!r} if m in sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    *output, modules = result.stdout.strip().splitlines()
    return "\n".join(output), json.loads(modules)


def test_help_imports_none_of_the_heavy_modules() -> None:
    output, modules = imported("--help", among=HEAVY)
    assert "Usage:" in output
    assert modules == []


def test_config_check_imports_its_adapter_only_and_nothing_that_logs_or_runs(tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text(
        f'[run]\ncommand = ["{sys.executable}", "train.py"]\n'
        f'state_dir = "{tmp_path / "state"}"\n\n'
        f'[adapter]\nname = "vits"\ncheckpoint_dir = "logs/ljs"\n'
    )
    among = (*HEAVY, *ADAPTER_MODULES, "supervisor.core.decisions", "supervisor.core.events")
    output, modules = imported("config", "check", "-c", str(config), among=among)
    assert 'name = "vits"' in output
    assert modules == ["pydantic", "trainer_adapters", "trainer_adapters.vits"]


def test_status_reads_the_ledger_without_logging_or_serving(tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text(
        f'[run]\ncommand = ["{sys.executable}", "-c", "pass"]\ncwd = "{tmp_path}"\n'
        f'state_dir = "{tmp_path / "state"}"\n'
    )
    ran = subprocess.run(
        [sys.executable, "-m", "supervisor.cli", "run", "-c", str(config)], capture_output=True, text=True
    )
    assert ran.returncode == 0, ran.stderr
    among = (
        "structlog",
        "asyncio",
        "watchdog",
        "apscheduler",
        "torch",
        "rich",
        "pydantic",  # the run's name and state_dir are read without the model
        "trainer_adapters",
        "supervisor.core.decisions",
    )
    output, modules = imported("status", "--json", "-c", str(config), among=among)
    assert json.loads(output)["state"] == "completed"
    assert modules == []
    output, modules = imported("status", "-c", str(config), among=among)
    assert "completed" in output
    assert modules == []  # the table is plain text


def test_a_command_still_finds_the_adapters_for_its_choices() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "supervisor.cli", "verify", "--adapter", "nosuch", "x.pth"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "vits" in result.stderr  # the known names, found lazily


def test_the_validator_worker_loads_torch_and_the_checks_but_not_the_client_nor_structlog(
    tmp_path: Path,
) -> None:
    checkpoint = write_torch(tmp_path / "model_100.pt")
    code = (
        "import json, runpy, sys\n"
        f"sys.argv = ['serve', {str(checkpoint)!r}]\n"
        "try:\n"
        "    runpy.run_module('supervisor.validator.worker.serve', run_name='__main__')\n"
        "except SystemExit as exc:\n"
        "    assert exc.code in (0, None), exc.code\n"
        "among = ('torch', 'structlog', 'supervisor.validator.client', 'pydantic', 'click', 'rich', 'sqlite3')\n"
        "print(json.dumps(sorted(m for m in among if m in sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    verdict, modules = result.stdout.strip().splitlines()
    assert json.loads(verdict)["ok"] is True
    assert json.loads(modules) == ["torch"]
