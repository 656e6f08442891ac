"""`supervisor.config`'s names load when first used: each is the object its module
defines, and `status`'s `locate` loads neither pydantic nor the model."""

from __future__ import annotations

import subprocess
import sys

import supervisor.config as config
from tests.support.lazy_package import (
    assert_names_are_their_modules_objects,
    assert_no_name_is_also_a_submodule,
)


def test_every_public_name_is_its_modules_object() -> None:
    assert_names_are_their_modules_objects(config)


def test_no_public_name_is_also_a_module_of_the_package() -> None:
    """`config.load` would be the module, not the function."""
    assert_no_name_is_also_a_submodule(config)


def test_locate_loads_neither_pydantic_nor_the_model() -> None:
    code = (
        "import sys\n"
        "from supervisor.config import locate\n"
        "print(sorted(m for m in sys.modules if m.startswith(('pydantic', 'supervisor', 'trainer_adapters'))))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == str(["supervisor", "supervisor.config", "supervisor.config.run_place"])
