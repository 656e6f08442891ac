"""torch.load, weights only, inside the allowed globals; its errors cut to the cause."""

from __future__ import annotations

import contextlib
import importlib
import pickle
import re
from typing import Any

import torch

from supervisor.validator.worker.content import (
    Rejected,
)
from supervisor.validator.worker.job import FORMAT_ZIP, Job
from supervisor.validator.worker.memory import _is_out_of_memory

# --- torch.load ---------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# "Unsupported global: GLOBAL x.y was not an allowed global by default ...",
# "Trying to load unsupported GLOBAL posix.system whose module posix is blocked."
_UNSAFE_GLOBAL = re.compile(r"\bGLOBAL ([\w.]+)")
# torch's advice around the actual cause of a weights-only failure.
_BOILERPLATE = (
    "Weights only load failed",
    "In PyTorch 2.6",
    "Please file an issue",
    "(1)",
    "(2)",
    "Check the documentation",
)
_UNPICKLER = "WeightsUnpickler error:"


def resolve_globals(names: tuple[str, ...]) -> list[Any]:
    """Import exactly the globals the request allows ("pathlib.PosixPath"), nothing else."""
    resolved = []
    for dotted in names:
        module, _, attribute = dotted.rpartition(".")
        while module:
            try:
                obj: Any = importlib.import_module(module)
                for part in attribute.split("."):
                    obj = getattr(obj, part)
                resolved.append(obj)
                break
            except (ImportError, AttributeError):
                module, _, head = module.rpartition(".")
                attribute = f"{head}.{attribute}"
        else:
            raise Rejected(f"allowed global cannot be imported: {dotted}")
    return resolved


# Python 3.13 moved the path classes to pathlib._local and pickles them under that
# name; a checkpoint may come from either side of that change.
PATHLIB_MODULES = ("pathlib", "pathlib._local")


def with_spellings(allowed: list[Any]) -> list[Any]:
    """Each allowed path class under both of its module names (torch's (obj, name) form)."""
    spelled: list[Any] = []
    for obj in allowed:
        if getattr(obj, "__module__", None) in PATHLIB_MODULES:
            spelled += [(obj, f"{module}.{obj.__qualname__}") for module in PATHLIB_MODULES]
        else:
            spelled.append(obj)
    return spelled


def torch_load(job: Job, *, mmap: bool) -> object:
    allowed = with_spellings(resolve_globals(job.request.allowed_globals))
    try:
        with torch.serialization.safe_globals(allowed):
            try:
                root = torch.load(job.opened, map_location="cpu", weights_only=True, mmap=mmap)
            except pickle.UnpicklingError as exc:
                raise Rejected(_unpickling_reason(job, str(exc))) from None
    except Rejected:
        raise
    except EOFError:
        raise Rejected("truncated: unexpected end of file") from None
    except Exception as exc:
        if _is_out_of_memory(exc):
            raise
        message = torch_cause(str(exc)) or type(exc).__name__
        # Legacy files: "unexpected EOF, expected 77 more bytes. The file might be corrupted."
        if message.startswith("unexpected EOF"):
            raise Rejected(f"truncated: {message.partition('. ')[0]}") from None
        raise Rejected(f"torch.load failed: {message}") from None
    if job.request.allowed_globals and job.format == FORMAT_ZIP:
        # What beyond torch's own safe globals it needed: what the trainer must allow.
        # The file loaded, so a scan that fails is the validator's failure (unknown),
        # never the file's.
        job.needs_globals = tuple(sorted(torch.serialization.get_unsafe_globals_in_checkpoint(job.opened)))
    return root


def _unpickling_reason(job: Job, message: str) -> str:
    message = _ANSI.sub("", message)
    unsafe = _UNSAFE_GLOBAL.findall(message)
    if job.format == FORMAT_ZIP:  # a static scan (no unpickling) names them all
        with contextlib.suppress(Exception):
            unsafe = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(job.opened)) or unsafe
    if unsafe:
        return f"unsafe global{'s' if len(unsafe) > 1 else ''} not allowed: {', '.join(unsafe)}"
    return f"unpickling failed: {torch_cause(message) or 'no reason given'}"


def torch_cause(message: str) -> str | None:
    """The cause in one of torch's messages, without its advice around it: what follows
    "WeightsUnpickler error:", else the first line that is not boilerplate."""
    message = _ANSI.sub("", message)
    if _UNPICKLER in message:
        message = message.split(_UNPICKLER, 1)[1]
    lines = [line.strip() for line in message.splitlines()]
    detail = [line for line in lines if line and not line.startswith(_BOILERPLATE)]
    return " ".join(detail[0].split()) if detail else None
