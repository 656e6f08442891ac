"""`supervisor.config`'s names load when first used: each is the object its module
defines, and `status`'s `locate` loads neither pydantic nor the model."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import supervisor.config as config


def test_every_public_name_is_its_modules_object() -> None:
    assert sorted(config.__all__) == sorted(config._HOME)
    for name, module in config._HOME.items():
        assert getattr(config, name) is getattr(importlib.import_module(f"supervisor.config.{module}"), name)
    assert set(config.__all__) <= set(dir(config))


def test_no_public_name_is_also_a_module_of_the_package() -> None:
    """A submodule named like a public name would shadow it once imported (`config.load`
    would be the module, not the function)."""
    modules = {info.name for info in pkgutil.iter_modules(config.__path__)}
    assert modules & set(config._HOME) == set()


def test_locate_loads_neither_pydantic_nor_the_model() -> None:
    code = (
        "import sys\n"
        "from supervisor.config import locate\n"
        "print(sorted(m for m in sys.modules if m.startswith(('pydantic', 'supervisor', 'trainer_adapters'))))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == str(["supervisor", "supervisor.config", "supervisor.config.run_place"])
