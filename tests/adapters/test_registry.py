"""The adapter registry: `get` imports only the adapter asked for, and the lazy registry
answers exactly what importing every adapter would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import trainer_adapters

ADAPTER_MODULES = {name: name.replace("-", "_") for name in trainer_adapters.names()}


def in_fresh_interpreter(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)


@pytest.mark.parametrize("name", sorted(ADAPTER_MODULES))
def test_get_imports_that_adapter_and_no_other(name: str) -> None:
    result = in_fresh_interpreter(
        "import json, sys, trainer_adapters\n"
        f"adapter = trainer_adapters.get({name!r})\n"
        "print(json.dumps([adapter.name, sorted(m for m in sys.modules if m.startswith('trainer_adapters.'))]))\n"
    )
    assert result.returncode == 0, result.stderr
    got, loaded = json.loads(result.stdout)
    assert got == name
    loaded_adapters = {m.removeprefix("trainer_adapters.") for m in loaded} & set(ADAPTER_MODULES.values())
    assert loaded_adapters == {ADAPTER_MODULES[name]}


def test_the_registry_is_the_same_whether_one_adapter_came_first_or_none() -> None:
    listing = "print(json.dumps([[a.name, a.summary] for a in trainer_adapters._all().values()]))\n"
    fresh = in_fresh_interpreter("import json, trainer_adapters\n" + listing)
    after_get = in_fresh_interpreter(
        "import json, trainer_adapters\n"
        "first = trainer_adapters.get('vits')\n"
        "assert trainer_adapters.get('vits') is first\n"
        "trainer_adapters.names()\n"
        "assert trainer_adapters.get('vits') is first\n" + listing
    )
    assert fresh.returncode == 0, fresh.stderr
    assert after_get.returncode == 0, after_get.stderr
    assert json.loads(after_get.stdout) == json.loads(fresh.stdout)
    assert [name for name, _ in json.loads(fresh.stdout)] == sorted(ADAPTER_MODULES, key=ADAPTER_MODULES.get)


@pytest.mark.parametrize("name", ["nosuch", "f5_tts", "base", "rules", "", "../generic", "generic.py"])
def test_a_name_that_is_no_adapter_is_a_key_error_naming_the_known_ones(name: str) -> None:
    result = in_fresh_interpreter(
        "import trainer_adapters\n"
        "try:\n"
        f"    trainer_adapters.get({name!r})\n"
        "except KeyError as exc:\n"
        "    print(exc.args[0])\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"unknown adapter {name!r}; known: {', '.join(sorted(ADAPTER_MODULES))}"


def test_an_adapter_in_a_module_not_named_after_it_is_refused(tmp_path: Path) -> None:
    (tmp_path / "misnamed.py").write_text(
        "from dataclasses import replace\n"
        "from trainer_adapters.generic import ADAPTER as GENERIC\n"
        "ADAPTER = replace(GENERIC, name='other-name')\n"
    )
    result = in_fresh_interpreter(
        f"import trainer_adapters\ntrainer_adapters.__path__.append({str(tmp_path)!r})\ntrainer_adapters.names()\n"
    )
    assert result.returncode != 0
    assert (
        "RuntimeError: the adapter 'other-name' must live in other_name.py, not misnamed.py" in result.stderr
    )
