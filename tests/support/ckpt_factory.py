"""Real checkpoint files for tests: good ones in every format the validator knows, and
damaged ones, each damaged in one specific way.

Writers return the path they wrote. Damage helpers change a file in place (or write
a hostile one) and return what a test needs to assert on (a record name, an offset).

    path = write_torch(tmp_path / "ckpt_100.pt", step=100)
    record = flip_bit_in_tensor_data(path)        # "ckpt_100/data/0"
"""

from __future__ import annotations

import json
import math
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

LOCAL_HEADER_SIZE = 30


def checkpoint(
    step: int = 100, epoch: int = 1, *, seed: int = 0, step_as_tensor: bool = False
) -> dict[str, Any]:
    """A small trainer-shaped checkpoint: model, optimizer state, step, epoch."""
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator)

    return {
        "model": {
            "enc.weight": randn(64, 32),
            "enc.bias": randn(64),
            "dec.weight": randn(32, 64).half(),
            "dec.scale": randn(32).bfloat16(),
            "embed.index": torch.arange(16),
        },
        "optimizer": {
            "state": {0: {"exp_avg": randn(64, 32), "step": torch.tensor(float(step))}},
            "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999)}],
        },
        "step": torch.tensor(step) if step_as_tensor else step,
        "epoch": epoch,
    }


def write_torch(
    path: Path,
    obj: object | None = None,
    *,
    step: int = 100,
    epoch: int = 1,
    legacy: bool = False,
    crc: bool = True,
) -> Path:
    """torch.save `obj` (default: checkpoint(step, epoch)): a zip, or the legacy
    (pre-1.6, non-zip) format, optionally with the writer's CRC-32s switched off."""
    obj = checkpoint(step, epoch) if obj is None else obj
    previous = torch.serialization.get_crc32_options()
    torch.serialization.set_crc32_options(crc)
    try:
        torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    finally:
        torch.serialization.set_crc32_options(previous)
    return path


def write_big_torch(path: Path, megabytes: int, *, legacy: bool = False) -> Path:
    """A checkpoint of about `megabytes` MB of fp32 weights in 16 MB tensors."""
    per_tensor = 4 << 20  # floats in 16 MB
    model = {f"layer{i}.weight": torch.ones(per_tensor) for i in range(max(1, megabytes // 16))}
    return write_torch(path, {"model": model, "step": 1}, legacy=legacy)


def write_safetensors(
    path: Path,
    tensors: dict[str, torch.Tensor] | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    from safetensors.torch import save_file

    if tensors is None:
        model = checkpoint()["model"]
        tensors = {name: t for name, t in model.items() if t.is_floating_point()}
    save_file(tensors, str(path), metadata=metadata)
    return path


SAFETENSORS_DTYPE_NAMES = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
}


def write_safetensors_raw(
    path: Path, tensors: list[tuple[str, torch.Tensor]], *, header_edit: dict[str, Any] | None = None
) -> Path:
    """A safetensors file laid out by hand: tensors back to back in the given order, with
    no alignment (the library aligns; other writers may not). `header_edit` replaces
    entries of the header after it is built, to make it lie."""
    header: dict[str, Any] = {}
    data = b""
    for name, tensor in tensors:
        raw = tensor.contiguous().view(torch.uint8).numpy().tobytes()
        header[name] = {
            "dtype": SAFETENSORS_DTYPE_NAMES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [len(data), len(data) + len(raw)],
        }
        data += raw
    header.update(header_edit or {})
    encoded = json.dumps(header).encode()
    path.write_bytes(len(encoded).to_bytes(8, "little") + encoded + data)
    return path


def write_empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


# --- damage ---------------------------------------------------------------------------


def truncate(path: Path, at: int) -> Path:
    """Cut the file to its first `at` bytes (a crash mid-save, a full disk)."""
    os.truncate(path, at)
    return path


def truncation_points(size: int, step_fraction: float = 0.07) -> list[int]:
    """Offsets every ~7% through a file of `size` bytes, plus one byte short."""
    count = math.ceil(1 / step_fraction)
    points = {max(1, int(size * i * step_fraction)) for i in range(count)} | {size - 1}
    return sorted(p for p in points if 0 < p < size)


def data_records(path: Path) -> list[str]:
    """The tensor-data records of a torch zip ("<archive>/data/<n>"), largest first."""
    with zipfile.ZipFile(path) as archive:
        infos = [i for i in archive.infolist() if "/data/" in i.filename and i.file_size]
    return [i.filename for i in sorted(infos, key=lambda i: -i.file_size)]


def record_data_span(path: Path, name: str) -> tuple[int, int]:
    """(offset, size) of record `name`'s data in the file, from its local header."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(name)
    with path.open("rb") as handle:
        handle.seek(info.header_offset)
        header = handle.read(LOCAL_HEADER_SIZE)
    name_length = int.from_bytes(header[26:28], "little")
    extra_length = int.from_bytes(header[28:30], "little")
    return info.header_offset + LOCAL_HEADER_SIZE + name_length + extra_length, info.file_size


def flip_bit_in_tensor_data(path: Path, record: str | None = None, bit: int = 3) -> str:
    """Flip one bit in the middle of a tensor's data (silent corruption: torch.load still
    accepts the file). Returns the record's name."""
    record = record or data_records(path)[0]
    offset, size = record_data_span(path, record)
    flip_bit(path, offset + size // 2, bit)
    return record


def flip_bit(path: Path, offset: int, bit: int = 0) -> None:
    with path.open("r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)[0]
        handle.seek(offset)
        handle.write(bytes([byte ^ (1 << bit)]))


def tensor_at(obj: dict[str, Any], dotted: str) -> torch.Tensor:
    """The tensor at key path `dotted`: "model.enc.weight" is "enc.weight" inside "model"."""
    if dotted in obj:
        found: torch.Tensor = obj[dotted]
        return found
    parts = dotted.split(".")
    for i in range(len(parts) - 1, 0, -1):
        head, rest = ".".join(parts[:i]), ".".join(parts[i:])
        if isinstance(obj.get(head), dict):
            try:
                return tensor_at(obj[head], rest)
            except KeyError:
                continue
    raise KeyError(dotted)


def write_nonfinite(
    path: Path, value: float = math.nan, tensor: str = "model.enc.weight", *, index: int = 5, step: int = 100
) -> Path:
    """A checkpoint whose tensor `tensor` holds `value` (NaN, Inf) at element `index`:
    what a trainer saves after its loss went NaN."""
    obj = checkpoint(step)
    tensor_at(obj, tensor).view(-1)[index] = value
    return write_torch(path, obj)


def corrupt_safetensors_header(path: Path) -> None:
    """Garble the JSON header of a safetensors file (its first key's opening quote)."""
    with path.open("r+b") as handle:
        handle.seek(9)
        handle.write(b"\xff")


# --- hostile files --------------------------------------------------------------------


class RunsCommand:
    """Unpickling this runs a shell command: what a hostile checkpoint would carry."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (self.command,)


def touch_command(sentinel: Path) -> str:
    return f"touch {sentinel}"


def write_malicious_torch(path: Path, sentinel: Path, *, legacy: bool = False) -> Path:
    """torch.save of a checkpoint whose pickle would run `touch SENTINEL` on load."""
    obj = {"model": {"w": torch.ones(4)}, "step": 1, "payload": RunsCommand(touch_command(sentinel))}
    return write_torch(path, obj, legacy=legacy)


def write_malicious_zip(path: Path, sentinel: Path) -> Path:
    """A zip laid out like torch's (archive/data.pkl, stored) holding a plain pickle
    that would run `touch SENTINEL`."""
    payload = pickle.dumps({"step": 1, "payload": RunsCommand(touch_command(sentinel))}, protocol=2)
    archive = path.stem
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as out:
        out.writestr(f"{archive}/data.pkl", payload)
        out.writestr(f"{archive}/byteorder", "little")
        out.writestr(f"{archive}/version", "3\n")
    return path


def write_malicious_pickle(path: Path, sentinel: Path) -> Path:
    """A bare pickle (no torch container at all) that would run `touch SENTINEL`."""
    path.write_bytes(pickle.dumps(RunsCommand(touch_command(sentinel)), protocol=2))
    return path
