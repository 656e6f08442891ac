"""Quarantine and verified copies, on real files."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from supervisor.checkpoints import copies, store
from supervisor.core.file_version import FileVersion


def version(path: Path) -> FileVersion:
    return FileVersion.of(os.lstat(path))


NOW = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)


def make(path: Path, data: bytes = b"checkpoint bytes") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_quarantine_moves_the_file_out_with_a_note_and_never_deletes(tmp_path: Path) -> None:
    bad = make(tmp_path / "run" / "ckpt" / "G_200.pth", b"torn")
    state = tmp_path / "state"
    dest = store.quarantine(bad, state, "rejected: CRC mismatch", {"verdict": {"ok": False}}, NOW).destination
    assert not bad.exists()
    assert dest == state / "quarantine" / "20261121T120000Z" / "G_200.pth"
    assert dest.read_bytes() == b"torn"
    note = json.loads(dest.with_name("G_200.pth.json").read_text())
    assert note["original_path"] == str(bad)
    assert note["reason"] == "rejected: CRC mismatch"
    assert note["verdict"] == {"ok": False}


def test_quarantining_the_same_name_twice_keeps_both(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = store.quarantine(make(tmp_path / "ckpt_1.pt", b"one"), state, "x", {}, NOW).destination
    second = store.quarantine(make(tmp_path / "ckpt_1.pt", b"two"), state, "y", {}, NOW).destination
    assert first != second
    assert (first.read_bytes(), second.read_bytes()) == (b"one", b"two")


def test_a_verified_copy_survives_an_in_place_rewrite_of_the_original(tmp_path: Path) -> None:
    original = make(tmp_path / "ckpt" / "last.pt", b"good state")
    state = tmp_path / "state"
    snap = copies.snapshot(
        original, state, "model", 450, in_place=True, verdict={"ok": True}, version=version(original)
    )
    assert snap is not None
    # torch.save truncates and rewrites the same inode: a hard link would not have helped.
    with original.open("r+b") as fh:
        fh.truncate(0)
        fh.write(b"torn")
    assert snap.copy.read_bytes() == b"good state"
    (listed,) = copies.snapshots(state)
    assert (listed.role, listed.step, listed.original, listed.in_place) == ("model", 450, original, True)
    with pytest.raises(FileExistsError):
        copies.restore(snap.copy, original)  # never over a file that is there: it would be gone
    assert original.read_bytes() == b"torn"
    store.quarantine(original, state, "rejected: torn", {}, NOW)  # what a plan does first
    copies.restore(snap.copy, original)
    assert original.read_bytes() == b"good state"


def test_a_copy_without_its_manifest_does_not_count(tmp_path: Path) -> None:
    state = tmp_path / "state"
    src = make(tmp_path / "ckpt_1.pt")
    snap = copies.snapshot(src, state, "model", 1, in_place=False, verdict={}, version=version(src))
    assert snap is not None
    snap.copy.with_name(f"{snap.copy.name}.json").unlink()  # as if power failed before it was written
    assert copies.snapshots(state) == []


def test_dropping_a_copy_removes_only_our_files(tmp_path: Path) -> None:
    original = make(tmp_path / "ckpt" / "ckpt_5.pt")
    state = tmp_path / "state"
    snap = copies.snapshot(original, state, "model", 5, in_place=False, verdict={}, version=version(original))
    assert snap is not None
    copies.drop_snapshot(snap)
    assert copies.snapshots(state) == []
    assert original.exists()
    assert not (state / "verified" / "step-5").exists()


def test_copies_leave_no_partial_files(tmp_path: Path) -> None:
    big = make(tmp_path / "big.pt", b"x" * (3 * 1024 * 1024))
    (tmp_path / "out").mkdir()
    fd = os.open(big, os.O_RDONLY)
    try:
        store.copy_from(fd, tmp_path / "out", "big.pt", dst_dir_fd=None, mode=0o644)
    finally:
        os.close(fd)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["big.pt"]
    assert (tmp_path / "out" / "big.pt").read_bytes() == big.read_bytes()


def test_a_copy_is_only_made_of_the_version_that_was_verified(tmp_path: Path) -> None:
    original = make(tmp_path / "ckpt" / "last.pt", b"verified version")
    verified = version(original)
    original.write_bytes(b"torn newer version")  # rewritten before the copy was made
    state = tmp_path / "state"
    assert copies.snapshot(original, state, "model", 7, in_place=True, verdict={}, version=verified) is None
    assert copies.snapshots(state) == []


def test_make_dirs_creates_every_missing_level_and_accepts_existing_ones(tmp_path: Path) -> None:
    deep = tmp_path / "quarantine" / "20261121T000000Z" / "sub"
    store.make_dirs(deep)
    store.make_dirs(deep)
    assert deep.is_dir()


def test_a_newer_version_that_changes_while_copied_leaves_the_older_copy_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An in-place name (last.pt) saved again: its newer version's copy replaces the older
    # one only once it is known good. The trainer rewriting it mid-copy (here: right after
    # the bytes were copied) must not cost the copy already kept.
    original = make(tmp_path / "ckpt" / "last.pt", b"first version")
    state = tmp_path / "state"
    first = copies.snapshot(original, state, "model", 7, in_place=True, verdict={}, version=version(original))
    assert first is not None
    original.write_bytes(b"second version")
    copy_bytes = store.copy_to_temporary

    def rewritten_meanwhile(*args: Any, **kwargs: Any) -> str:
        name = copy_bytes(*args, **kwargs)
        with original.open("ab") as fh:
            fh.write(b" and more")
        return name

    monkeypatch.setattr(copies, "copy_to_temporary", rewritten_meanwhile)
    assert (
        copies.snapshot(original, state, "model", 7, in_place=True, verdict={}, version=version(original))
        is None
    )
    (kept,) = copies.snapshots(state)
    assert kept.copy.read_bytes() == b"first version"
    assert sorted(p.name for p in kept.copy.parent.iterdir()) == ["last.pt", "last.pt.json"]


def test_a_restore_never_replaces_a_file_the_trainer_saved_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = make(tmp_path / "ckpt" / "G_10.pth", b"verified")
    state = tmp_path / "state"
    snap = copies.snapshot(original, state, "G", 10, in_place=False, verdict={}, version=version(original))
    assert snap is not None
    original.unlink()
    copy_bytes = store.copy_to_temporary

    def saved_meanwhile(*args: Any, **kwargs: Any) -> str:
        name = copy_bytes(*args, **kwargs)
        original.write_bytes(b"the trainer's new save")  # after the check, before the name is taken
        return name

    monkeypatch.setattr(store, "copy_to_temporary", saved_meanwhile)
    with pytest.raises(FileExistsError):
        copies.restore(snap.copy, original)
    assert original.read_bytes() == b"the trainer's new save"
    assert sorted(p.name for p in original.parent.iterdir()) == ["G_10.pth"], "no temporary file left"


def test_a_file_cut_short_while_it_is_copied_is_no_disk_trouble_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = make(tmp_path / "ckpt" / "last.pt", b"x" * 100_000)
    copy_bytes = store._copy_bytes

    def cut_short(src_fd: int, out: int, size: int) -> None:
        os.truncate(original, 10)  # the trainer rewrites it in place, mid-copy
        copy_bytes(src_fd, out, size)

    monkeypatch.setattr(store, "_copy_bytes", cut_short)
    state = tmp_path / "state"
    assert (
        copies.snapshot(original, state, "model", 7, in_place=True, verdict={}, version=version(original))
        is None
    )
    assert copies.snapshots(state) == []
    assert not [p for p in state.rglob("*") if p.is_file()]
