"""Walking a loaded checkpoint object: its named tensors and the storages that own them."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch

from supervisor.validator.worker.content import (
    Rejected,
)
from supervisor.validator.worker.data_pass import Owner

# --- walking the loaded object ------------------------------------------------------


_LEAVES = (int, float, complex, str, bytes, type(None), torch.dtype, torch.device)


def _children(name: str, obj: object) -> list[tuple[str, object]]:
    """What may hold tensors inside `obj` (a loss history of a million floats does not)."""
    if isinstance(obj, Mapping):
        items = list(obj.items())
    elif isinstance(obj, list | tuple | set | frozenset):
        items = list(enumerate(obj))
    elif isinstance(getattr(obj, "__dict__", None), dict):  # an allowed global's instance
        items = list(vars(obj).items())
    else:
        return []
    return [(f"{name}.{key}" if name else str(key), v) for key, v in items if not isinstance(v, _LEAVES)]


def named_values(root: object) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor (and storage, as a uint8/typed 1-d tensor) in `root`, depth first in
    dict order, named by its key path ("model.enc.weight")."""
    stack: list[tuple[str, object]] = [("", root)]
    seen: set[int] = set()
    while stack:
        name, obj = stack.pop()
        if isinstance(obj, torch.Tensor):
            if obj.layout != torch.strided:  # sparse: only the values can be non-finite
                try:
                    obj = obj._values() if obj.layout == torch.sparse_coo else obj.values()
                except RuntimeError:
                    continue
            yield name or "<root>", obj
        elif isinstance(obj, torch.storage.TypedStorage):
            yield name or "<root>", _storage_values(obj._untyped_storage, obj.dtype)
        elif isinstance(obj, torch.UntypedStorage):
            yield name or "<root>", _storage_values(obj, torch.uint8)
        elif id(obj) not in seen:
            seen.add(id(obj))
            stack.extend(reversed(_children(name, obj)))


def _storage_values(storage: torch.UntypedStorage, dtype: torch.dtype) -> torch.Tensor:
    """A storage's whole content as a 1-d tensor of `dtype` (no copy)."""
    raw = torch.empty(0, dtype=torch.uint8).set_(storage)
    return raw if dtype == torch.uint8 else raw.view(dtype)


def _is_floating(dtype: torch.dtype) -> bool:
    return dtype.is_floating_point or dtype.is_complex


def collect_owners(root: object, skip: tuple[str, ...] = ()) -> list[Owner]:
    """The distinct storages behind floating-point tensors, in first-seen order, but for
    those under the top-level keys in `skip` (bookkeeping whose values may be inf)."""
    owners: dict[int, Owner] = {}
    for name, t in named_values(root):
        if name.split(".", 1)[0] in skip:
            continue
        if t.device.type != "cpu":  # loaded to the CPU: only the meta device stays
            raise Rejected(f"tensor {name} is on the {t.device.type} device: it holds no data to resume from")
        if not _is_floating(t.dtype):
            continue
        storage = t.untyped_storage()
        if storage.nbytes() == 0:
            continue
        owner = owners.get(storage.data_ptr())
        if owner is None:
            owner = owners[storage.data_ptr()] = Owner(t.dtype, _storage_values(storage, t.dtype), [])
        owner.tensors.append((name, t))
    return list(owners.values())
