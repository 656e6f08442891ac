"""Fixtures and hooks only; helpers live in tests.support."""

from __future__ import annotations

import os
from collections.abc import Generator
from pathlib import Path

import pytest

from tests.support.load import scaled

E2E = Path(__file__).parent / "e2e"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under e2e/ runs the real CLI: `make test-fast` leaves it out."""
    for item in items:
        if E2E in item.path.parents:
            item.add_marker(pytest.mark.slow)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None]:
    """pytest-timeout's budgets (the ini's, a module's or a test's mark) are for an idle
    machine: stretched by the measured slowdown before pytest-timeout reads them, since no
    test is about them."""
    marker = item.get_closest_marker("timeout")
    idle_s = _idle_timeout_s(item.config, marker)
    if idle_s:
        args = marker.args[1:] if marker is not None else ()
        kwargs = {k: v for k, v in marker.kwargs.items() if k != "timeout"} if marker is not None else {}
        item.add_marker(pytest.mark.timeout(scaled(idle_s), *args, **kwargs), append=False)
    yield


def _idle_timeout_s(config: pytest.Config, marker: pytest.Mark | None) -> float:
    """The timeout pytest-timeout would apply (0: none), as it looks it up."""
    if marker is not None:
        given = marker.args[0] if marker.args else marker.kwargs.get("timeout")
    else:
        given = config.getoption("timeout", None)  # --timeout=0 turns it off
        if given is None:
            given = os.environ.get("PYTEST_TIMEOUT") or config.getini("timeout")
    return float(given or 0)


@pytest.fixture(autouse=True)
def _no_inherited_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    os.environ.pop("TRAIN_SUPERVISOR_ATTEMPT", None)
