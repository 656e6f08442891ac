"""One version of one file, as `lstat` saw it: the identity every layer keys a verdict by."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FileVersion:
    """Size, mtime, inode and ctime. A rewrite in place changes the first two, a replace
    (an atomic save) the inode; ctime is there because no `utime` can set it back, so a
    same-size rewrite with its mtime restored (`cp -p`, `rsync -t`) is a new version too."""

    size: int
    mtime_ns: int
    inode: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileVersion:
        return cls(st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


# What a verdict about a file that could not be looked at names as its version.
NO_VERSION = FileVersion(0, 0, 0, 0)

# A file version at a path: what a verdict is about.
VersionKey = tuple[str, FileVersion]
