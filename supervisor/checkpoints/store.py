"""The supervisor's own files beside the trainer's: durable copies, and the quarantine.

- Quarantine: a bad (or unwanted) checkpoint is *moved* out of the trainer's directory
  into state_dir/quarantine/<timestamp>/, with a JSON note beside it. Never deleted, and
  never just renamed in place: the trainers' globs and digit-sorts would still pick it.
- Verified copies (supervisor/checkpoints/copies.py) are made with the same durable copy.

Every write goes to a temporary name of ours (`.NAME.<random>.partial` or `.NAME.tmp`,
created with O_EXCL|O_NOFOLLOW, so nothing planted under that name is ever written
through), is fsynced, renamed into place, and the directory is fsynced; new folders are
fsynced into their parents, and no folder of ours is ever entered through a symbolic
link. Sources are opened without following links or blocking (supervisor/checkpoints/entries.py).
What a cut can still leave (temporary names, a note whose move never happened) is
cleared on the next start (`supervisor/checkpoints/reconcile.py`).

Operations in the trainer's directory take its descriptor (`dir_fd`, see
supervisor/checkpoints/pinned.py) and the entry's name, so a directory swapped under the path
between a check and a move is never written into.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from supervisor.checkpoints.entries import Kind, kind_of, open_file
from supervisor.core.file_version import FileVersion

QUARANTINE_DIR = "quarantine"
VERIFIED_DIR = "verified"
FICLONE = 0x40049409  # ioctl: share the source's extents (btrfs, XFS); no data is copied
PARTIAL = ".partial"
COPY_CHUNK = 16 * 1024 * 1024
NOTE_OUTCOME = "outcome"  # set in a quarantine note whose move did not (fully) happen
NOTE_ORIGINAL_VERSION = "original_version"  # the entry's version when its move began


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: Path, *, within: Path | None = None) -> None:
    """mkdir -p, each new folder's entry made durable in its parent (a power cut must not
    take a folder away from under a file already fsynced in it). Below `within`, an
    existing component that is a symbolic link is refused: our folders are never entered
    through one."""
    if within is not None:
        _refuse_links(path, within)
    missing = []
    while not os.path.lexists(path):
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            folder.mkdir()
        _refuse_links(folder, folder.parent)
        fsync_dir(folder.parent)


def _refuse_links(path: Path, within: Path) -> None:
    try:
        relative = path.relative_to(within)
    except ValueError:
        return
    current = within
    for part in relative.parts:
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            return
        if stat.S_ISLNK(mode) or not stat.S_ISDIR(mode):
            raise OSError(
                errno.ENOTDIR, f"{current} is not a directory of ours (a symbolic link?): not writing there"
            )


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # a leftover of ours (or a name planted there: unlinking removes the name only)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1, default=str)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def temporary_name(name: str) -> str:
    return f".{name}.{secrets.token_hex(4)}{PARTIAL}"


def temporary_target(entry: str) -> str | None:
    """The name a temporary name of ours (`.NAME.<8 hex>.partial`, or the older
    `.NAME.partial`) was for; None for any other name."""
    if not entry.startswith(".") or not entry.endswith(PARTIAL):
        return None
    inner = entry[1 : -len(PARTIAL)]
    head, _, token = inner.rpartition(".")
    if head and len(token) == 8 and all(c in "0123456789abcdef" for c in token):
        return head
    return inner or None


def copy_from(
    src_fd: int, dst_dir: Path, name: str, *, dst_dir_fd: int | None, mode: int, replace: bool = True
) -> None:
    """Copy the open file `src_fd` durably to `name` in `dst_dir`; `replace=False` never
    replaces an entry there (FileExistsError). Nothing is left on failure."""
    tmp = copy_to_temporary(src_fd, dst_dir, name, dst_dir_fd=dst_dir_fd, mode=mode)
    give_name(tmp, dst_dir, name, dst_dir_fd=dst_dir_fd, replace=replace)


def copy_to_temporary(src_fd: int, dst_dir: Path, name: str, *, dst_dir_fd: int | None, mode: int) -> str:
    """Copy the open file `src_fd` durably to a temporary name of ours beside `name`: a
    reflink where the filesystem can, else its bytes as they are now (the size it has at
    the start: a file still growing is not followed). Returns that name; nothing is left
    on failure."""
    tmp = temporary_name(name)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    out = os.open(dst_dir / tmp if dst_dir_fd is None else tmp, flags, 0o600, dir_fd=dst_dir_fd)
    try:
        try:
            fcntl.ioctl(out, FICLONE, src_fd)
        except OSError:
            _copy_bytes(src_fd, out, os.fstat(src_fd).st_size)
        os.fchmod(out, stat.S_IMODE(mode) & 0o666 or 0o600)
        os.fsync(out)
    except BaseException:
        unlink_at(tmp, dst_dir, dst_dir_fd)
        raise
    finally:
        os.close(out)
    return tmp


def give_name(tmp: str, dst_dir: Path, name: str, *, dst_dir_fd: int | None, replace: bool) -> None:
    """Give the temporary file `tmp` its name, durably. Without `replace`, an entry that
    appeared under the name meanwhile (the trainer saving) is never replaced: a hard link
    fails where the name is taken; where the filesystem has no hard links, the name is
    checked just before the rename."""
    src = dst_dir / tmp if dst_dir_fd is None else tmp
    dst = dst_dir / name if dst_dir_fd is None else name
    try:
        if replace:
            os.replace(src, dst, src_dir_fd=dst_dir_fd, dst_dir_fd=dst_dir_fd)
        else:
            try:
                os.link(src, dst, src_dir_fd=dst_dir_fd, dst_dir_fd=dst_dir_fd, follow_symlinks=False)
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS):
                    raise
                if exists_at(name, dst_dir, dst_dir_fd):
                    raise FileExistsError(errno.EEXIST, f"{name} appeared: not replacing it") from None
                os.replace(src, dst, src_dir_fd=dst_dir_fd, dst_dir_fd=dst_dir_fd)
            else:
                unlink_at(tmp, dst_dir, dst_dir_fd)
    except BaseException:
        unlink_at(tmp, dst_dir, dst_dir_fd)
        raise
    if dst_dir_fd is None:
        fsync_dir(dst_dir)
    else:
        os.fsync(dst_dir_fd)


def unlink_at(name: str, folder: Path, dir_fd: int | None) -> None:
    with contextlib.suppress(OSError):
        os.unlink(folder / name if dir_fd is None else name, dir_fd=dir_fd)


class ShorterSource(OSError):
    """The file being copied was cut short meanwhile (someone rewrites it)."""


def _copy_bytes(src_fd: int, out: int, size: int) -> None:
    """The first `size` bytes of `src_fd` into `out` (in the kernel where it can)."""
    offset = 0
    while offset < size:
        count = min(COPY_CHUNK, size - offset)
        try:
            done = os.copy_file_range(src_fd, out, count, offset, offset)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                raise
            data = os.pread(src_fd, count, offset)
            done = os.pwrite(out, data, offset) if data else 0
        if done == 0:
            raise ShorterSource(errno.EIO, "the file got shorter while it was copied")
        offset += done


def version_note(st: os.stat_result) -> list[int]:
    """A file version as a quarantine note keeps it: device, inode, size, mtime, ctime."""
    version = FileVersion.of(st)
    return [st.st_dev, version.inode, version.size, version.mtime_ns, version.ctime_ns]


# --- quarantine -----------------------------------------------------------------------------


@dataclass(frozen=True)
class MoveResult:
    """What a move aside did. `moved`: the entry is gone from the trainer's directory and
    lies at `destination`. Otherwise it is still in place and `why_not` says why."""

    destination: Path
    moved: bool
    why_not: str | None = None


def quarantine(
    path: Path,
    state_dir: Path,
    reason: str,
    details: dict[str, Any],
    now: datetime,
    *,
    dir_fd: int | None = None,
) -> MoveResult:
    """Move the entry `path` (a name in the directory `dir_fd` when given) into the
    quarantine, with a note written first; never through a link, never deleting it."""
    folder = state_dir / QUARANTINE_DIR / now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    make_dirs(folder, within=state_dir)
    dest = folder / path.name
    n = 1
    while os.path.lexists(dest) or os.path.lexists(dest.with_name(f"{dest.name}.json")):
        dest = folder / f"{path.stem}.{n}{path.suffix}"
        n += 1
    note_path = dest.with_name(f"{dest.name}.json")
    source = path.name if dir_fd is not None else path
    note = {
        "original_path": str(path),
        "reason": reason,
        "moved_at": now.isoformat(),
        NOTE_ORIGINAL_VERSION: version_note(os.lstat(source, dir_fd=dir_fd)),
        **details,
    }
    write_json(note_path, note)  # the intent first: a crash leaves a trace
    why_not = _move(source, dest, dir_fd)
    if why_not is not None:
        write_json(note_path, {**note, NOTE_OUTCOME: f"not moved: {why_not}"})
        return MoveResult(dest, False, why_not)
    return MoveResult(dest, True)


def _move(source: Path | str, dest: Path, dir_fd: int | None) -> str | None:
    """Move `source` to `dest`; None when done, else why it is still in place."""
    try:
        os.rename(source, dest, src_dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            return f"cannot move it: {exc.strerror or exc}"
        try:
            why_not = _move_across(source, dest, dir_fd)
        except OSError as exc:  # a full quarantine disk: the original stays, whole
            why_not = f"cannot copy it to the quarantine's filesystem: {exc.strerror or exc}"
        if why_not is not None:
            return why_not
    with contextlib.suppress(OSError):  # the move is done: its durability is best effort
        fsync_dir(dest.parent)
    with contextlib.suppress(OSError):
        if dir_fd is not None:
            os.fsync(dir_fd)
        else:
            fsync_dir(Path(source).parent)
    return None


def _move_across(source: Path | str, dest: Path, dir_fd: int | None) -> str | None:
    """Another filesystem: copy, make it durable, check that the source stayed the same,
    then remove the source. Where the source cannot be removed, our copy goes again (the
    original is intact): only what really happened is left behind."""
    st = os.lstat(source, dir_fd=dir_fd)
    kind = kind_of(st.st_mode)
    if kind is Kind.SYMLINK:
        os.symlink(os.readlink(source, dir_fd=dir_fd), dest)
    elif kind is Kind.FIFO:
        os.mkfifo(dest, stat.S_IMODE(st.st_mode))
    elif kind is Kind.FILE:
        changed = _copy_checked(source, dest, dir_fd)
        if changed is not None:
            return changed
    else:
        return (
            f"it is {kind.value}, on another filesystem than the quarantine: move it out of the "
            "checkpoint directory yourself"
        )
    try:
        os.unlink(source, dir_fd=dir_fd)
    except FileNotFoundError:
        return None  # removed meanwhile (the trainer pruning it): our whole copy is all of it
    except OSError as exc:
        unlink_at(dest.name, dest.parent, None)  # a duplicate of an original that stays where it was
        return f"cannot remove it from the checkpoint directory: {exc.strerror or exc}"
    return None


def _copy_checked(source: Path | str, dest: Path, dir_fd: int | None) -> str | None:
    fd = open_file(source, dir_fd=dir_fd)
    try:
        before = os.fstat(fd)
        try:
            copy_from(fd, dest.parent, dest.name, dst_dir_fd=None, mode=before.st_mode)
        except ShorterSource:
            return "it got shorter while it was copied to another filesystem (it stays; no copy is kept)"
        after = os.fstat(fd)
        try:
            named: os.stat_result | None = os.lstat(source, dir_fd=dir_fd)
        except FileNotFoundError:
            named = None  # removed meanwhile: the copy holds the version that was there
    finally:
        os.close(fd)
    if named is None:  # (its unlink changed its ctime: size and mtime tell a rewrite)
        if (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns):
            return None
        return f"it was rewritten, then removed, while it was copied (the copy at {dest} may be mixed)"
    if FileVersion.of(after) != FileVersion.of(before) or named.st_ino != before.st_ino:
        # Someone writes it: both are kept (the copy is named in the note), nothing is removed.
        return (
            f"it changed while it was copied to another filesystem (a copy is at {dest}; the original stays)"
        )
    return None


def exists_at(name: str, folder: Path, dir_fd: int | None) -> bool:
    """An entry (of any kind, a dangling link too) is named `name` in `folder`, or in the
    directory `dir_fd` when given."""
    try:
        os.lstat(folder / name if dir_fd is None else name, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    return True


def now_utc() -> datetime:
    return datetime.now(UTC)
