"""`supervisor.core`'s names load when first used: each is the object its module defines,
and importing one module of the core does not load the rest."""

from __future__ import annotations

import subprocess
import sys

import pytest

import supervisor.core as core
from tests.support.lazy_package import (
    assert_names_are_their_modules_objects,
    assert_no_name_is_also_a_submodule,
)


def test_every_public_name_is_its_modules_object() -> None:
    assert_names_are_their_modules_objects(core)


def test_no_public_name_is_also_a_module_of_the_package() -> None:
    """`core.decide` would be the module, not the function."""
    assert_no_name_is_also_a_submodule(core)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Decidee'"):
        _ = core.Decidee  # type: ignore[attr-defined]


def test_importing_the_events_loads_neither_the_decisions_nor_the_state() -> None:
    code = (
        "import sys\n"
        "from supervisor.core.events import Exited\n"
        "print(sorted(m for m in sys.modules if m.startswith('supervisor.core')))\n"
        "from supervisor.core import decide\n"
        "print('supervisor.core.decisions' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    first, then = result.stdout.splitlines()
    assert first == str(
        ["supervisor.core", "supervisor.core.events", "supervisor.core.phases", "supervisor.core.said"]
    )
    assert then == "True"


def test_an_adapter_loads_the_words_of_its_line_rules_not_the_events() -> None:
    code = (
        "import sys\n"
        "import trainer_adapters.base\n"
        "print(sorted(m for m in sys.modules if m.startswith('supervisor.core')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == str(["supervisor.core", "supervisor.core.said"])
