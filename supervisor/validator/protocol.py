"""Checkpoint validation's protocol: the request and the verdict, as the daemon's client
and the worker both read and write them (JSON lines, one job at a time). Standard library
only: the worker imports it next to torch, and nothing of the client's asyncio side."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from supervisor.core.file_version import FileVersion


@dataclass(frozen=True)
class ValidationRequest:
    path: str
    required_keys: tuple[str, ...] = ()  # "a.b": key b inside the dict under key a
    step_key: str | None = None  # where the content keeps its step; nested "a.b" allowed
    epoch_key: str | None = None
    expected_step: int | None = None  # from the file name; must equal the content's when both are known
    expected_epoch: int | None = None
    allowed_globals: tuple[str, ...] = ()  # extra safe globals for weights_only, e.g. "pathlib.PosixPath"
    check_finite: bool = True
    model_key: str | None = None  # the state dict whose key -> shape map the verdict carries
    # (list key, keys each item holds): e.g. ("optimizer.param_groups", ("initial_lr",))
    each_item: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # (mapping key, keys it holds unless empty): e.g. ("scaler", ("scale", ...))
    when_not_empty: tuple[tuple[str, tuple[str, ...]], ...] = ()
    finite_except: tuple[str, ...] = ()  # top-level keys whose tensors need not be finite

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ValidationRequest:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for name in ("required_keys", "allowed_globals", "finite_except"):
            values[name] = tuple(values.get(name, ()))
        for name in ("each_item", "when_not_empty"):
            values[name] = tuple((key, tuple(keys)) for key, keys in values.get(name, ()))
        return cls(**values)


EMPTY = "empty file"  # the reason for a file of no bytes: during a run, a write not begun yet


@dataclass(frozen=True)
class Verdict:
    """What the worker found. `step`/`epoch` are the content's when it has them, else the
    file name's. `version` is the version of the file that was judged: a file rewritten in
    place is a new file. `checksum` is a cheap fingerprint
    (CRC-32, hex): for torch zips over the records' CRC-32s, otherwise over the whole file.
    `seconds` is the worker's time on the job (or the client's, when the worker failed)."""

    path: str
    ok: bool
    reason: str | None  # None when ok
    step: int | None
    epoch: int | None
    version: FileVersion
    checksum: str | None
    format: str | None  # "torch-zip" | "torch-legacy" | "safetensors" | None
    seconds: float
    notes: tuple[str, ...] = ()  # what was not checked, and why (e.g. the writer disabled CRCs)
    # True when the worker failed (timeout, crash, could not start) instead of judging
    # the file: the verdict says nothing certain about the file and may be retried later.
    validator_error: bool = False
    # The globals (beyond torch's own safe ones) the file needs to load: what the trainer's
    # torch.load must allow (e.g. pathlib.PosixPath in a Lightning checkpoint).
    needs_globals: tuple[str, ...] = ()
    # The request's model state dict as {key: shape} (None when not asked or not found).
    shapes: dict[str, list[int]] | None = None
    # True when the file changed or went while it was read (a rewrite in place overlapped
    # the read): no verdict about any version of it; it is read again once it is quiet.
    changed: bool = False

    def to_json(self) -> dict[str, Any]:
        """Flat: the version's fields are top-level keys (what `verify --json` prints)."""
        data = asdict(self)
        data.update(data.pop("version"))
        data["notes"] = list(self.notes)
        data["needs_globals"] = list(self.needs_globals)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Verdict:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["version"] = FileVersion(*(int(data.get(f.name, 0)) for f in fields(FileVersion)))
        values["notes"] = tuple(values.get("notes", ()))
        values["needs_globals"] = tuple(values.get("needs_globals", ()))
        return cls(**values)
