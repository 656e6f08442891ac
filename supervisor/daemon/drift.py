"""Config drift: did the trainer's own config files change between two moments?

A `Fingerprint` records, for each config file (VITS `-c configs/ljs.json`, a GPT-SoVITS or
F5-TTS yaml, Applio's `logs/<model>/config.json`, ...), its sha256 and size, and keeps the
text itself when it is small, so that a later change can be summarised line by line or key
by key. Only `fingerprint` touches the filesystem; the rest is pure.

JSON files are hashed over a canonical dump (sorted keys, compact separators), so
re-indenting one is not a change, and `ignore_keys` (dotted) are dropped first: Applio's
train.py writes the running PIDs into its own config.json as `process_pids`, which must
not count as drift. Every other file is hashed over its raw bytes.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import json
import os
import stat
import tomllib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, cast, get_args

MAX_KEPT_BYTES = 256 * 1024  # text up to this size is kept for summaries
MAX_JSON_BYTES = 16 * 1024 * 1024  # JSON up to this size is parsed for the canonical hash
VALUE_WIDTH = 60  # values in summaries are cut to about this many characters
FORMAT_VERSION = 1

Status = Literal["ok", "missing", "unreadable"]

_UNPARSED = object()  # a file that has no structured reading (or failed to parse)


@dataclass(frozen=True)
class FileState:
    """One file at one moment. `sha256` and `size` are None unless `status` is "ok"."""

    path: str  # absolute
    status: Status
    sha256: str | None = None
    size: int | None = None
    text: str | None = None  # the content, when it is text and at most MAX_KEPT_BYTES
    error: str | None = None  # why it is missing or unreadable

    @property
    def key(self) -> tuple[str, str | None]:
        """What counts for "unchanged": the status and, when readable, the hash."""
        return (self.status, self.sha256)


@dataclass(frozen=True)
class Fingerprint:
    files: tuple[FileState, ...]
    ignore_keys: tuple[str, ...] = ()

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(f.path for f in self.files)

    def file(self, path: str | Path) -> FileState | None:
        wanted = os.path.abspath(path)
        return next((f for f in self.files if f.path == wanted), None)

    def to_json(self) -> str:
        doc = {
            "version": FORMAT_VERSION,
            "ignore_keys": list(self.ignore_keys),
            "files": [asdict(f) for f in self.files],
        }
        return json.dumps(doc, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Fingerprint:
        """Parse `to_json` output; ValueError (naming what is wrong) on anything else."""
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("version") != FORMAT_VERSION:
            raise ValueError(f"not a version {FORMAT_VERSION} drift fingerprint")
        ignore = doc.get("ignore_keys")
        files = doc.get("files")
        if not isinstance(ignore, list) or not all(isinstance(k, str) for k in ignore):
            raise ValueError("fingerprint: ignore_keys must be a list of strings")
        if not isinstance(files, list):
            raise ValueError("fingerprint: files must be a list")
        return cls(tuple(_state_from_dict(f) for f in files), tuple(ignore))


# -- reading files ---------------------------------------------------------------------


def fingerprint(paths: Sequence[Path], ignore_keys: Sequence[str] = ()) -> Fingerprint:
    """Fingerprint each file (duplicates once, in the given order); never raises for a
    missing or unreadable file, which is recorded as such with the reason."""
    ignore = tuple(ignore_keys)
    unique = dict.fromkeys(os.path.abspath(p) for p in paths)
    return Fingerprint(tuple(_file_state(p, ignore) for p in unique), ignore)


def _file_state(path: str, ignore: tuple[str, ...]) -> FileState:
    cap = MAX_JSON_BYTES if _kind(path) == "json" else MAX_KEPT_BYTES
    try:
        raw, sha, size = _read(path, cap)
    except (FileNotFoundError, NotADirectoryError) as exc:
        return FileState(path, "missing", error=exc.strerror or str(exc))
    except OSError as exc:
        return FileState(path, "unreadable", error=exc.strerror or str(exc))
    if raw is not None and _kind(path) == "json":
        sha = _canonical_json_sha(raw, ignore) or sha
    text = _as_text(raw) if raw is not None and size <= MAX_KEPT_BYTES else None
    return FileState(path, "ok", sha, size, text)


def _read(path: str, cap: int) -> tuple[bytes | None, str, int]:
    """The raw content when it is at most `cap` bytes (else None), its sha256 and size."""
    if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block the open
        raise OSError(0, "not a regular file")
    digest = hashlib.sha256()
    kept = bytearray()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
            if size <= cap:
                kept += chunk
    return (bytes(kept) if size <= cap else None), digest.hexdigest(), size


def _as_text(raw: bytes) -> str | None:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    return None if "\x00" in text else text


def _canonical_json_sha(raw: bytes, ignore: Sequence[str]) -> str | None:
    """sha256 of the sorted, compact dump without `ignore` keys; None if not JSON."""
    try:
        value = _drop_keys(json.loads(raw), ignore)
    except (ValueError, RecursionError):
        return None
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def _drop_keys(value: object, dotted_keys: Sequence[str]) -> object:
    """Remove each dotted key that exists (through nested objects) from `value`, in place."""
    for dotted in dotted_keys:
        *parents, last = dotted.split(".")
        node = value
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return value


def _kind(path: str) -> str:
    suffix = Path(path).suffix.lower()
    return {".json": "json", ".toml": "toml", ".yaml": "yaml", ".yml": "yaml"}.get(suffix, "text")


# -- comparing -------------------------------------------------------------------------


def same(old: Fingerprint, new: Fingerprint) -> bool:
    """True when the same files are tracked and none changed (status or content hash)."""
    return [(f.path, f.key) for f in old.files] == [(f.path, f.key) for f in new.files]


def changes(old: Fingerprint, new: Fingerprint, limit: int = 20) -> list[str]:
    """One readable line per change, each starting with the file's path; [] when none.

    Key-level for JSON and TOML (and YAML when PyYAML is importable), `line N: ...` for
    other text (changed and removed lines are numbered as in the old file, added lines as
    in the new), the two hashes when the old or new content was not kept. At most `limit`
    lines, then "... and N more"."""
    ignore = tuple(dict.fromkeys(old.ignore_keys + new.ignore_keys))
    lines: list[str] = []
    for path in dict.fromkeys(new.paths + old.paths):
        lines += _file_changes(path, old.file(path), new.file(path), ignore)
    limit = max(limit, 0)
    if len(lines) > limit:
        return [*lines[:limit], f"... and {len(lines) - limit} more"]
    return lines


def _file_changes(
    path: str, old: FileState | None, new: FileState | None, ignore: tuple[str, ...]
) -> list[str]:
    if old is None:
        return [f"{path}: newly tracked ({_describe(new)})"]
    if new is None:
        return [f"{path}: no longer tracked"]
    if old.key == new.key:
        return []
    if old.status != new.status:
        return [f"{path}: {_status_change(old, new)}"]
    return [f"{path}: {line}" for line in _content_changes(old, new, ignore)]


def _describe(state: FileState | None) -> str:
    if state is None or state.status == "missing":
        return "missing"
    if state.status == "unreadable":
        return f"unreadable: {state.error}"
    return f"{state.size} bytes"


def _status_change(old: FileState, new: FileState) -> str:
    if new.status == "missing":
        return "disappeared"
    if new.status == "unreadable":
        return f"became unreadable: {new.error}"
    if old.status == "missing":
        return f"appeared ({new.size} bytes)"
    return f"became readable ({new.size} bytes)"


def _content_changes(old: FileState, new: FileState, ignore: tuple[str, ...]) -> list[str]:
    if old.text is None or new.text is None:
        return [_hash_line(old, new)]
    kind = _kind(new.path)
    before = _parse(kind, old.text, ignore)
    after = _parse(kind, new.text, ignore)
    if before is not _UNPARSED and after is not _UNPARSED:
        lines = list(_value_changes(before, after, ""))
    else:
        lines = list(_line_changes(old.text, new.text))
    return lines or [_hash_line(old, new)]  # e.g. only line endings changed


def _hash_line(old: FileState, new: FileState) -> str:
    return f"content changed (sha256 {(old.sha256 or '')[:8]} -> {(new.sha256 or '')[:8]})"


# -- structured (key-level) differences ------------------------------------------------


def _parse(kind: str, text: str, ignore: Sequence[str]) -> object:
    """The parsed document, or _UNPARSED when the kind has no structure or it fails."""
    try:
        if kind == "json":
            return _drop_keys(json.loads(text), ignore)
        if kind == "toml":
            return tomllib.loads(text)
    except (ValueError, RecursionError):  # TOMLDecodeError is a ValueError
        return _UNPARSED
    load = _yaml_loader() if kind == "yaml" else None
    return _UNPARSED if load is None else _parse_yaml(load, text)


def _parse_yaml(load: Callable[[str], object], text: str) -> object:
    try:
        value = load(text)
    except Exception:  # yaml.YAMLError and friends; any failure means "diff the lines"
        return _UNPARSED
    return value if isinstance(value, dict | list) else _UNPARSED


def _yaml_loader() -> Callable[[str], object] | None:
    """PyYAML's safe_load when it happens to be installed (it is not a dependency)."""
    try:
        module = importlib.import_module("yaml")
    except ImportError:
        return None
    return cast(Callable[[str], object], module.safe_load)


def _value_changes(old: object, new: object, path: str) -> Iterator[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        yield from _dict_changes(old, new, path)
    elif isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            yield from _value_changes(a, b, f"{path}[{i}]")
    elif type(old) is not type(new) or old != new:  # 1, 1.0 and true differ in JSON
        yield f"{path or '(top level)'}: {_short(old)} -> {_short(new)}"


def _dict_changes(old: dict[Any, Any], new: dict[Any, Any], path: str) -> Iterator[str]:
    for key in sorted(old.keys() | new.keys(), key=str):
        sub = f"{path}.{key}" if path else str(key)
        if key not in new:
            yield f"{sub}: removed (was {_short(old[key])})"
        elif key not in old:
            yield f"{sub}: added (= {_short(new[key])})"
        else:
            yield from _value_changes(old[key], new[key], sub)


# -- line differences ------------------------------------------------------------------


def _line_changes(old_text: str, new_text: str) -> Iterator[str]:
    a, b = old_text.splitlines(), new_text.splitlines()
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        paired = min(i2 - i1, j2 - j1)
        for k in range(paired):
            yield f"line {i1 + k + 1}: {_short(a[i1 + k])} -> {_short(b[j1 + k])}"
        for i in range(i1 + paired, i2):
            yield f"line {i + 1}: removed {_short(a[i])}"
        for j in range(j1 + paired, j2):
            yield f"line {j + 1}: added {_short(b[j])}"


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= VALUE_WIDTH else text[: VALUE_WIDTH - 3] + "..."


# -- deserialising ---------------------------------------------------------------------


def _state_from_dict(raw: object) -> FileState:
    if not isinstance(raw, dict):
        raise ValueError("fingerprint: each file must be an object")
    path, status = raw.get("path"), raw.get("status")
    if not isinstance(path, str) or status not in get_args(Status):
        raise ValueError(f"fingerprint: bad path or status in {_short(raw)}")
    size = raw.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool)):
        raise ValueError(f"fingerprint: {path}: size must be an integer")
    sha256, text, error = (_opt_str(raw, path, k) for k in ("sha256", "text", "error"))
    return FileState(path, cast(Status, status), sha256, size, text, error)


def _opt_str(raw: dict[str, object], path: str, key: str) -> str | None:
    value = raw.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"fingerprint: {path}: {key} must be a string")
    return value
