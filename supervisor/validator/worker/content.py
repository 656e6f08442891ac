"""The validator worker's checks of what a loaded checkpoint holds: required keys, the
step and epoch counters, what the trainer restores outside its `try` (optimizer param
groups, a GradScaler state), and the model's keys and shapes. Imports torch: only the
worker imports this.

A counter is a whole number a trainer could have written: an int (or a one-element
integer tensor, or ASCII digits) within 64 bits. Anything else is malformed content, a
rejection with its reason, never a validator failure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from supervisor.validator.protocol import ValidationRequest

INT64 = (-(1 << 63), (1 << 63) - 1)
DIGITS = re.compile(r"-?[0-9]{1,19}")
MAX_SHAPES = 100_000  # keys of one model state dict recorded for the shape check


class Rejected(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Changed(Exception):
    """The file changed (or went) while it was read: no verdict about any version of it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Content:
    step: int | None
    epoch: int | None
    shapes: dict[str, list[int]] | None


def lookup(obj: object, dotted: str) -> tuple[bool, object]:
    """Find "a.b": key b inside dict a first, else a literal key with dots, or a mix
    (a state_dict's "enc.weight" inside "model")."""
    parts = dotted.split(".")

    def walk(node: object, rest: list[str]) -> tuple[bool, object]:
        if not rest:
            return True, node
        if not isinstance(node, Mapping):
            return False, None
        for i in range(1, len(rest) + 1):
            key = ".".join(rest[:i])
            if key in node:
                found, value = walk(node[key], rest[i:])
                if found:
                    return True, value
        return False, None

    return walk(obj, parts)


def as_int(value: object) -> int | None:
    """A 64-bit whole number as a trainer writes one: an int, a one-element integral
    tensor or float, or ASCII digits. None for anything else."""
    number: object = value
    if isinstance(value, bool):
        return None
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.dtype.is_complex or value.dtype == torch.bool or value.is_meta:
            return None
        number = value.item()
    if isinstance(number, str):
        number = int(number) if DIGITS.fullmatch(number.strip()) else None
    if isinstance(number, float):
        number = int(number) if number.is_integer() else None
    if isinstance(number, int) and not isinstance(number, bool) and INT64[0] <= number <= INT64[1]:
        return number
    return None


def check_content(request: ValidationRequest, root: object) -> Content:
    missing = [key for key in request.required_keys if not lookup(root, key)[0]]
    if missing:
        raise Rejected(f"missing key{'s' if len(missing) > 1 else ''}: {', '.join(missing)}")
    for key, needed in request.each_item:
        _each_item(root, key, needed)
    for key, needed in request.when_not_empty:
        _when_not_empty(root, key, needed)
    step = _counter(root, "step", request.step_key, request.expected_step)
    epoch = _counter(root, "epoch", request.epoch_key, request.expected_epoch)
    return Content(step, epoch, model_shapes(root, request.model_key))


def check_name_counters(request: ValidationRequest) -> None:
    """A name whose number no counter could reach (20 digits) names no real save."""
    for what, value in (("step", request.expected_step), ("epoch", request.expected_epoch)):
        if value is not None and not INT64[0] <= value <= INT64[1]:
            raise Rejected(f"the name's {what} {value} is beyond any training counter (more than 64 bits)")


def _counter(root: object, what: str, key: str | None, expected: int | None) -> int | None:
    """The counter under `key` ("step|update": the first of those present)."""
    if key is None:
        return expected
    for alternative in key.split("|"):
        found, value = lookup(root, alternative)
        if found:
            key = alternative
            break
    else:
        raise Rejected(f"missing key: {key}")
    number = as_int(value)
    if number is None:
        raise Rejected(f"{what} in {key} is not a whole number a trainer counts with: {_short(value)}")
    if expected is not None and number != expected:
        raise Rejected(f"{what} mismatch: name says {expected}, content says {number}")
    return number


def _each_item(root: object, key: str, needed: tuple[str, ...]) -> None:
    found, items = lookup(root, key)
    if not found:
        return  # (required_keys says whether it must be there)
    if not isinstance(items, list | tuple):
        raise Rejected(f"{key} is not a list: the trainer's resume would fail on it")
    for n, item in enumerate(items):
        lacking = [k for k in needed if not isinstance(item, Mapping) or k not in item]
        if lacking:
            raise Rejected(
                f"{key}[{n}] lacks {', '.join(lacking)}: the trainer's resume (outside its try) fails on it"
            )


def _when_not_empty(root: object, key: str, needed: tuple[str, ...]) -> None:
    found, value = lookup(root, key)
    if not found or (isinstance(value, Mapping) and not value):
        return
    if not isinstance(value, Mapping):
        raise Rejected(f"{key} is not a state dict: the trainer restores it outside its try and crashes")
    lacking = [k for k in needed if k not in value]
    if lacking:
        raise Rejected(
            f"{key} lacks {', '.join(lacking)}: the trainer restores it outside its try and crashes"
        )


def model_shapes(root: object, key: str | None) -> dict[str, list[int]] | None:
    """{dotted key: shape} of every tensor under `key` (nested dicts flattened)."""
    if key is None:
        return None
    found, model = lookup(root, key)
    if not found or not isinstance(model, Mapping):
        return None
    shapes: dict[str, list[int]] = {}
    stack: list[tuple[str, object]] = [("", model)]
    while stack and len(shapes) < MAX_SHAPES:
        prefix, node = stack.pop()
        if isinstance(node, torch.Tensor):
            shapes[prefix] = list(node.shape)
        elif isinstance(node, Mapping):
            stack.extend((f"{prefix}.{k}" if prefix else str(k), v) for k, v in node.items())
    return shapes


def _short(value: object) -> str:
    text = (
        repr(value)
        if not isinstance(value, str) or len(value) < 40
        else f"{value[:20]!r}... ({len(value)} chars)"
    )
    return " ".join(text.split())[:60]
