"""Checks for a package that loads its public names when first used (PEP 562: a `_HOME`
map of name to submodule, and `__getattr__`)."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def assert_names_are_their_modules_objects(package: ModuleType) -> None:
    home: dict[str, str] = package._HOME
    assert sorted(package.__all__) == sorted(home)
    for name, module in home.items():
        assert getattr(package, name) is getattr(
            importlib.import_module(f"{package.__name__}.{module}"), name
        )
    assert set(package.__all__) <= set(dir(package))


def assert_no_name_is_also_a_submodule(package: ModuleType) -> None:
    """Importing a submodule sets the package attribute of its name, which would then
    shadow a lazily loaded name (a module where a function was meant)."""
    modules = {info.name for info in pkgutil.iter_modules(package.__path__)}
    assert modules & set(package._HOME) == set()
