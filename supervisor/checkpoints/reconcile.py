"""On start, after a crash or a power cut: make the supervisor's own files and the ledger
agree with the disk before the first plan.

Every write of ours goes to a temporary name first and is renamed into place, and a
quarantine note is written before its move, so an interrupted supervisor leaves only
these behind:

- `.NAME.<random>.partial` (or the older `.NAME.partial`): a copy cut short (a verified
  copy, a restore into the checkpoint directory, a quarantine move across
  filesystems). Its source is intact: removed (a regular file only: a link or anything
  else planted under such a name is left alone).
- `.NAME.tmp`: a note or manifest cut short: removed.
- a verified copy without its manifest (the manifest is written last): never a copy yet,
  removed; a manifest whose copy is gone: removed.
- a quarantine note whose file never moved: the file is still where the trainer left
  it; the note says so, and the next plan decides again.
- a file moved into the quarantine whose move never reached the ledger: recorded now.

Only the supervisor's own files are ever removed here; a trainer's file never is.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from supervisor.checkpoints import store

OUTCOME = store.NOTE_OUTCOME  # set in a quarantine note whose move did not happen


@dataclass(frozen=True)
class Finding:
    kind: str
    level: str  # "info" or "warning"
    message: str


@dataclass(frozen=True)
class FoundMove:
    """A quarantine move that happened but never reached the ledger."""

    original: str
    moved_to: str
    reason: str


@dataclass
class Tidied:
    findings: list[Finding] = field(default_factory=list)
    found_moves: list[FoundMove] = field(default_factory=list)


def tidy(
    state_dir: Path,
    checkpoint_dirs: list[Path],
    is_checkpoint: Callable[[Path], bool],
    recorded_moves: set[str],
    *,
    recursive: bool = False,
) -> Tidied:
    """Clear what an interrupted supervisor left half done (blocking file I/O: run it in
    a thread). `recorded_moves`: the quarantine destinations the ledger knows."""
    result = Tidied()
    removed: list[Path] = []
    try:
        removed += _tidy_verified(state_dir / store.VERIFIED_DIR)
        for directory in checkpoint_dirs:
            removed += _tidy_restores(directory, is_checkpoint, recursive)
    except OSError as exc:
        result.findings.append(
            Finding("leftovers", "warning", f"could not clear every unfinished copy: {exc}")
        )
    if removed:
        names = ", ".join(sorted(str(p) for p in removed))
        result.findings.append(
            Finding("leftovers", "info", f"removed {len(removed)} unfinished copies: {names}")
        )
    _tidy_quarantine(state_dir / store.QUARANTINE_DIR, recorded_moves, result)
    return result


def _tidy_verified(root: Path) -> list[Path]:
    removed = []
    for path in _files(root):
        name = path.name
        if _is_temporary(name) or store.temporary_target(name) is not None:
            removed.append(_remove(path))
        elif name.endswith(".json"):
            if not path.with_suffix("").exists():
                removed.append(_remove(path))  # a manifest without its copy
        elif not path.with_name(f"{name}.json").exists():
            removed.append(_remove(path))  # a copy without its manifest: never complete
    for folder in sorted((p for p in root.rglob("*") if p.is_dir()), reverse=True):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only empty ones go
    return removed


def _tidy_restores(directory: Path, is_checkpoint: Callable[[Path], bool], recursive: bool) -> list[Path]:
    """`.NAME.partial` beside the trainer's files: a restore of a verified copy cut short."""
    removed = []
    walk = os.walk(directory) if directory.is_dir() else iter(())
    for root, dirs, files in walk:
        if not recursive:
            dirs.clear()
        for name in files:
            target = store.temporary_target(name)
            path = Path(root) / name
            if target is not None and is_checkpoint(Path(root) / target) and _regular(path):
                removed.append(_remove(path))
    return removed


def _regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _tidy_quarantine(root: Path, recorded: set[str], result: Tidied) -> None:
    for path in _files(root):
        try:
            if path.name.endswith(".json.tmp"):
                _remove(path)  # a note cut short: its move had not started
            elif path.name.endswith(".json") and not path.name.startswith("."):
                _check_note(path, recorded, result)
        except OSError as exc:
            result.findings.append(Finding("quarantine_note", "warning", f"cannot tidy {path}: {exc}"))


def _check_note(note_path: Path, recorded: set[str], result: Tidied) -> None:
    """A note whose move the ledger recorded is settled: what the user did with the file
    since (deleted it, put it back) is theirs to do."""
    moved_to = note_path.with_suffix("")
    if str(moved_to) in recorded:
        return
    try:
        note = json.loads(note_path.read_text())
    except (OSError, ValueError) as exc:
        result.findings.append(Finding("quarantine_note", "warning", f"unreadable note {note_path}: {exc}"))
        return
    if not isinstance(note, dict) or OUTCOME in note or not isinstance(note.get("original_path"), str):
        return
    original = Path(note["original_path"])
    partials = [p for p in moved_to.parent.iterdir() if store.temporary_target(p.name) == moved_to.name]
    if os.path.lexists(moved_to):
        if _still_in_place(original, note):
            _copied_not_moved(note_path, note, moved_to, result)
        else:
            result.found_moves.append(FoundMove(str(original), str(moved_to), str(note.get("reason", ""))))
        return
    if os.path.lexists(original):
        for partial in partials:
            _remove(partial)  # a copy across filesystems cut short; the original is intact
        note[OUTCOME] = "not moved: the supervisor stopped before the move; the file stayed in place"
        store.write_json(note_path, note)
        result.findings.append(
            Finding(
                "quarantine_unfinished", "info", f"a move aside was cut short; {original} is still in place"
            )
        )
        return
    note[OUTCOME] = "gone: neither here nor at its original path when the supervisor restarted"
    store.write_json(note_path, note)
    result.findings.append(
        Finding(
            "quarantine_lost", "warning", f"{original} was to be moved aside but is gone from both places"
        )
    )


def _still_in_place(original: Path, note: dict[str, object]) -> bool:
    """The very version whose move began is still at its original path: a move across
    filesystems stopped after its copy, before the original was removed. (After a rename,
    a file there is a new one the trainer saved.)"""
    kept = note.get(store.NOTE_ORIGINAL_VERSION)
    try:
        now = store.version_note(os.lstat(original))
    except OSError:
        return False
    # Not by device: its number may change across the reboot after a power cut.
    return isinstance(kept, list) and now[1:] == kept[1:]


def _copied_not_moved(note_path: Path, note: dict[str, object], copy: Path, result: Tidied) -> None:
    """Our copy of an original that is intact where it was is a duplicate: it goes, as it
    does when the original cannot be removed; the plan moves the original again."""
    _remove(copy)
    note[OUTCOME] = "not moved: the supervisor stopped after copying it; the copy went, the file stayed"
    store.write_json(note_path, note)
    result.findings.append(
        Finding(
            "quarantine_unfinished",
            "info",
            f"a move aside to another filesystem was cut short after the copy; {note['original_path']} "
            "is still in place",
        )
    )


def _files(root: Path) -> Iterator[Path]:
    if not root.is_dir():
        return iter(())
    return (p for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink())


def _is_temporary(name: str) -> bool:
    return name.startswith(".") and (name.endswith(".partial") or name.endswith(".tmp"))


def _remove(path: Path) -> Path:
    path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        store.fsync_dir(path.parent)
    return path
