"""Verified copies: state_dir/verified/step-<N>/<role>/<name>, each with a JSON manifest
written last, so a copy without its manifest (power loss mid-copy) does not count. A copy
is made with store's durable copy (a temporary name of ours, fsynced, renamed), and put
back in the trainer's directory never over an entry that is there.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any

from supervisor.checkpoints.entries import open_file
from supervisor.checkpoints.plan import Snapshot
from supervisor.checkpoints.store import (
    VERIFIED_DIR,
    ShorterSource,
    copy_from,
    copy_to_temporary,
    exists_at,
    give_name,
    make_dirs,
    unlink_at,
    write_json,
)
from supervisor.core.file_version import FileVersion


def snapshot(
    src: Path,
    state_dir: Path,
    role: str,
    step: int,
    *,
    in_place: bool,
    verdict: dict[str, Any],
    version: FileVersion,
    dir_fd: int | None = None,
) -> Snapshot | None:
    """Keep a copy of `src` as it was verified (`version`); an older copy of the same
    name and step (an overwritten name) is replaced. None if the file is no longer that
    version, or changed while it was being copied."""
    try:
        fd = open_file(src.name if dir_fd is not None else src, dir_fd=dir_fd)
    except FileNotFoundError:
        return None  # gone since it was verified: nothing of that version to keep
    try:
        before = os.fstat(fd)
        if FileVersion.of(before) != version:
            return None
        copy = state_dir / VERIFIED_DIR / f"step-{step}" / role / src.name
        make_dirs(copy.parent, within=state_dir)
        try:
            tmp = copy_to_temporary(fd, copy.parent, copy.name, dst_dir_fd=None, mode=before.st_mode)
        except ShorterSource:
            return None  # rewritten while copied (no disk trouble): its next version lands anew
        after = os.fstat(fd)
    finally:
        os.close(fd)
    if FileVersion.of(after) != FileVersion.of(before):
        unlink_at(tmp, copy.parent, None)  # an older copy of the name stays as it was
        return None
    # The copy replaces an older one of the name (an overwritten name) only now, once it
    # is known good; its manifest goes first, so a power cut between them leaves a copy
    # without a manifest (not counted), never a manifest describing other bytes.
    manifest = copy.with_name(f"{copy.name}.json")
    manifest.unlink(missing_ok=True)
    give_name(tmp, copy.parent, copy.name, dst_dir_fd=None, replace=True)
    record = {"original": str(src), "role": role, "step": step, "in_place": in_place, "verdict": verdict}
    write_json(manifest, record)
    return Snapshot(role, step, src, copy, in_place, checksum=verdict.get("checksum"))


def snapshots(state_dir: Path) -> list[Snapshot]:
    """Every complete verified copy in the store (those whose manifest exists)."""
    found = []
    for manifest in (state_dir / VERIFIED_DIR).glob("step-*/*/*.json"):
        copy = manifest.with_suffix("")
        try:
            data = json.loads(manifest.read_text())
            original, role, step = Path(data["original"]), str(data["role"]), int(data["step"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if copy.is_file() and not copy.is_symlink():
            verdict = data.get("verdict") if isinstance(data.get("verdict"), dict) else {}
            found.append(
                Snapshot(
                    role, step, original, copy, bool(data.get("in_place")), checksum=verdict.get("checksum")
                )
            )
    return sorted(found, key=lambda s: (s.step, s.role))


def snapshot_verdict(copy: Path) -> dict[str, Any]:
    """What the validator said of the file a copy was made of (epoch, checksum...)."""
    try:
        verdict = json.loads(copy.with_name(f"{copy.name}.json").read_text())["verdict"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return verdict if isinstance(verdict, dict) else {}


def room_for(state_dir: Path, size: int, reserve: int) -> str | None:
    """Why a copy of `size` bytes must not be made in the state directory (it would leave
    less than `reserve` free, kept for the ledger and notes); None when it may."""
    folder = state_dir
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError as exc:
        return f"cannot tell the free space on {folder}: {exc.strerror or exc}"
    if free - size >= reserve:
        return None
    return (
        f"{free / 1e9:.2f} GB free on the state filesystem ({folder}); a copy of {size / 1e9:.2f} GB "
        f"would leave less than the {reserve / 1e9:.2f} GB kept for the ledger"
    )


def drop_snapshot(snap: Snapshot) -> None:
    """Remove one of our own copies (never a trainer's file)."""
    snap.copy.with_name(f"{snap.copy.name}.json").unlink(missing_ok=True)
    snap.copy.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        snap.copy.parent.rmdir()
        snap.copy.parent.parent.rmdir()


def restore(copy: Path, path: Path, *, dir_fd: int | None = None) -> os.stat_result:
    """Put a verified copy back where the trainer will look for it (the name `path.name`
    in the directory `dir_fd`, when given), never over an entry that is there (it would be
    gone). Returns the restored file's stat."""
    if exists_at(path.name, path.parent, dir_fd):
        raise FileExistsError(errno.EEXIST, f"{path} is there: not restoring over it")
    fd = open_file(copy)
    try:
        mode = os.fstat(fd).st_mode
        if dir_fd is None:
            make_dirs(path.parent)
            copy_from(fd, path.parent, path.name, dst_dir_fd=None, mode=mode, replace=False)
            return os.lstat(path)
        copy_from(fd, path.parent, path.name, dst_dir_fd=dir_fd, mode=mode, replace=False)
        return os.lstat(path.name, dir_fd=dir_fd)
    finally:
        os.close(fd)
