"""Whether a file we are about to act on (a config whose command we run) could have been
written by someone else: the file and every directory above it must belong to root or
to us and be writable by no other user, as sshd's StrictModes demands of its keys.

A directory with the sticky bit (like /tmp) may be writable by all: others cannot
replace what is ours in it. A group may write where nobody but the owner (and root)
is in the group (the usual private group of one user).
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from pathlib import Path


def others_can_write(path: Path, runs_as: int | None = None) -> str | None:
    """Why a user other than root and `runs_as` (default: us) could change `path`, or
    None if nobody can."""
    me = os.geteuid() if runs_as is None else runs_as
    real = Path(os.path.realpath(path))
    for current in (real, *real.parents):
        try:
            st = os.stat(current)
        except OSError as exc:
            return f"cannot check {current}: {exc.strerror or exc}"
        problem = _problem(current, st, me)
        if problem is not None:
            return problem
    return None


def _problem(path: Path, st: os.stat_result, me: int) -> str | None:
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid not in (0, me):
        return f"{path} belongs to {_user(st.st_uid)}, who could change it"
    if mode & stat.S_IWOTH and not (stat.S_ISDIR(st.st_mode) and mode & stat.S_ISVTX):
        return f"{path} is writable by every user (mode {mode:04o})"
    if mode & stat.S_IWGRP:
        others = _group_members(st.st_gid) - {_user(0), _user(me), _user(st.st_uid)}
        if others:
            return f"{path} is writable by group {_group(st.st_gid)} ({', '.join(sorted(others))})"
    return None


def _group_members(gid: int) -> set[str]:
    members: set[str] = set()
    try:
        members.update(grp.getgrgid(gid).gr_mem)
    except KeyError:
        return {f"gid {gid}"}  # an unknown group: assume the worst
    members.update(entry.pw_name for entry in pwd.getpwall() if entry.pw_gid == gid)
    return members


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return f"gid {gid}"
