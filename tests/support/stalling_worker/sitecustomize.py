"""Test support, never shipped: put on PYTHONPATH by a test (see tests.support.stalling_worker),
it makes the validator worker hang on the one checkpoint named in STALL_ON, as a worker
stuck in a hostile file would, so the test sees what the supervisor does about it.

Standard library only. It acts in no process but the worker: it waits for the worker's
checks module to be imported (the daemon and the trainer never import it), then wraps
that module's `validate`. Where STALL_MARK names a file, each worker notes in it that it
started with this hook ("started"), that it has imported torch and its checks ("ready"),
and each stall ("stalled"), so a test can tell what really happened in the worker.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import os
import sys
import time
from types import ModuleType
from typing import Any

STALL_ON = "TRAIN_SUPERVISOR_TEST_STALL_ON"
STALL_MARK = "TRAIN_SUPERVISOR_TEST_STALL_MARK"
CHECKS = "supervisor.validator.worker.checks"


def note(what: str) -> None:
    mark = os.environ.get(STALL_MARK)
    if mark:
        with open(mark, "a") as fh:
            fh.write(f"{what} {os.getpid()}\n")


def _stall_forever(path: str) -> None:
    print(f"test hook: stalling on {path}", file=sys.stderr, flush=True)
    note("stalled")
    while True:
        time.sleep(3600)


def _stalling(validate: Any) -> Any:
    @functools.wraps(validate)
    def wrapper(request: Any, *args: Any, **kwargs: Any) -> Any:
        if request.path == os.environ.get(STALL_ON):
            _stall_forever(request.path)
        return validate(request, *args, **kwargs)

    return wrapper


class _ThenWrap(importlib.abc.Loader):
    def __init__(self, inner: importlib.abc.Loader) -> None:
        self.inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.inner.exec_module(module)
        module.validate = _stalling(module.validate)  # type: ignore[attr-defined]
        note("ready")


class _WatchChecks(importlib.abc.MetaPathFinder):
    def find_spec(
        self, name: str, path: Any = None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        if name != CHECKS:
            return None
        sys.meta_path.remove(self)  # once
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _ThenWrap(spec.loader)
        return spec


def _is_worker() -> bool:
    argv = getattr(sys, "orig_argv", [])
    return "supervisor.validator.worker.serve" in argv


if __name__ == "sitecustomize" and os.environ.get(STALL_ON):  # run by site, not imported for its names
    sys.meta_path.insert(0, _WatchChecks())
    if _is_worker():
        note("started")
