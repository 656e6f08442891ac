"""The supervisor's own files beside the trainer's: quarantine and verified copies.

- Quarantine: a bad (or unwanted) checkpoint is *moved* out of the trainer's directory
  into state_dir/quarantine/<timestamp>/, with a JSON note beside it. Never deleted, and
  never just renamed in place: the trainers' globs and digit-sorts would still pick it.
- Verified copies: state_dir/verified/step-<N>/<role>/<name>, each with a JSON manifest
  written last, so a copy without its manifest (power loss mid-copy) does not count.

Every write goes to a temporary name, is fsynced, renamed into place, and the directory
is fsynced; new folders are fsynced into their parents. What a cut can still leave
(temporary names, a note whose move never happened) is cleared on the next start
(`supervisor/reconcile.py`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from supervisor.planner import Snapshot

QUARANTINE_DIR = "quarantine"
VERIFIED_DIR = "verified"
FICLONE = 0x40049409  # ioctl: share the source's extents (btrfs, XFS); no data is copied


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: Path) -> None:
    """mkdir -p, each new folder's entry made durable in its parent (a power cut must not
    take a folder away from under a file already fsynced in it)."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        folder.mkdir(exist_ok=True)
        fsync_dir(folder.parent)


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w") as fh:
        json.dump(data, fh, indent=1, default=str)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def copy_file(src: Path, dst: Path) -> None:
    """Copy durably through a temporary name: a reflink where the filesystem can, else bytes."""
    make_dirs(dst.parent)
    tmp = dst.with_name(f".{dst.name}.partial")
    with src.open("rb") as fin, tmp.open("wb") as fout:
        try:
            fcntl.ioctl(fout.fileno(), FICLONE, fin.fileno())
        except OSError:
            shutil.copyfileobj(fin, fout, 16 * 1024 * 1024)
        fout.flush()
        os.fsync(fout.fileno())
    os.replace(tmp, dst)
    fsync_dir(dst.parent)


def quarantine(path: Path, state_dir: Path, reason: str, details: dict[str, Any], now: datetime) -> Path:
    """Move `path` into the quarantine with a note; returns where it went."""
    folder = state_dir / QUARANTINE_DIR / now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    make_dirs(folder)
    dest = folder / path.name
    n = 1
    while dest.exists() or dest.with_name(f"{dest.name}.json").exists():
        dest = folder / f"{path.stem}.{n}{path.suffix}"
        n += 1
    note = {"original_path": str(path), "reason": reason, "moved_at": now.isoformat(), **details}
    write_json(dest.with_name(f"{dest.name}.json"), note)  # the intent first: a crash leaves a trace
    _move(path, dest)
    return dest


def _move(src: Path, dst: Path) -> None:
    try:
        os.rename(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        copy_file(src, dst)  # another filesystem: copy durably, then remove the original
        src.unlink()
    fsync_dir(dst.parent)
    with contextlib.suppress(OSError):
        fsync_dir(src.parent)


def snapshot(
    src: Path,
    state_dir: Path,
    role: str,
    step: int,
    *,
    in_place: bool,
    verdict: dict[str, Any],
    identity: tuple[int, int, int],
) -> Snapshot | None:
    """Keep a copy of `src` as it was verified (`identity` = size, mtime_ns, inode).
    None if it is no longer that version, or changed while it was being copied."""
    before = os.stat(src)
    if (before.st_size, before.st_mtime_ns, before.st_ino) != identity:
        return None
    copy = state_dir / VERIFIED_DIR / f"step-{step}" / role / src.name
    copy_file(src, copy)
    after = os.stat(src)
    if (before.st_size, before.st_mtime_ns, before.st_ino) != (
        after.st_size,
        after.st_mtime_ns,
        after.st_ino,
    ):
        copy.unlink()
        return None
    manifest = {"original": str(src), "role": role, "step": step, "in_place": in_place, "verdict": verdict}
    write_json(copy.with_name(f"{copy.name}.json"), manifest)
    return Snapshot(role, step, src, copy, in_place)


def snapshots(state_dir: Path) -> list[Snapshot]:
    """Every complete verified copy in the store (those whose manifest exists)."""
    found = []
    for manifest in (state_dir / VERIFIED_DIR).glob("step-*/*/*.json"):
        copy = manifest.with_suffix("")
        try:
            data = json.loads(manifest.read_text())
        except (OSError, ValueError):
            continue
        if copy.exists():
            original = Path(data["original"])
            found.append(
                Snapshot(data["role"], int(data["step"]), original, copy, bool(data.get("in_place")))
            )
    return sorted(found, key=lambda s: (s.step, s.role))


def snapshot_epoch(copy: Path) -> int | None:
    """The epoch the validator read from the file a copy was made of, if any."""
    try:
        epoch = json.loads(copy.with_name(f"{copy.name}.json").read_text())["verdict"]["epoch"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return epoch if isinstance(epoch, int) else None


def drop_snapshot(snap: Snapshot) -> None:
    """Remove one of our own copies (never a trainer's file)."""
    snap.copy.with_name(f"{snap.copy.name}.json").unlink(missing_ok=True)
    snap.copy.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        snap.copy.parent.rmdir()
        snap.copy.parent.parent.rmdir()


def restore(copy: Path, path: Path) -> None:
    """Put a verified copy back where the trainer will look for it."""
    copy_file(copy, path)


def now_utc() -> datetime:
    return datetime.now(UTC)
