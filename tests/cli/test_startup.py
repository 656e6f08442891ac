"""`train-supervisor --help` loads click and the command module, not the rest: what each
command needs is imported when that command runs."""

from __future__ import annotations

import subprocess
import sys

HEAVY = (
    "pydantic",
    "structlog",
    "trainer_adapters",
    "asyncio",
    "watchdog",
    "apscheduler",
    "sqlite3",
    "torch",
)


def test_help_imports_none_of_the_heavy_modules() -> None:
    code = (
        "import sys\n"
        "sys.argv = ['train-supervisor', '--help']\n"
        "from supervisor.cli import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_a_command_still_finds_the_adapters_for_its_choices() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "supervisor.cli", "verify", "--adapter", "nosuch", "x.pth"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "vits" in result.stderr  # the known names, found lazily
