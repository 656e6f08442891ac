"""Fixtures only; helpers live in tests.support."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

E2E = Path(__file__).parent / "e2e"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under e2e/ runs the real CLI: `make test-fast` leaves it out."""
    for item in items:
        if E2E in item.path.parents:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _no_inherited_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    os.environ.pop("TRAIN_SUPERVISOR_ATTEMPT", None)
