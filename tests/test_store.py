"""Quarantine and verified copies, on real files."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from supervisor import store


def identity(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return (st.st_size, st.st_mtime_ns, st.st_ino)


NOW = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)


def make(path: Path, data: bytes = b"checkpoint bytes") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_quarantine_moves_the_file_out_with_a_note_and_never_deletes(tmp_path: Path) -> None:
    bad = make(tmp_path / "run" / "ckpt" / "G_200.pth", b"torn")
    state = tmp_path / "state"
    dest = store.quarantine(bad, state, "rejected: CRC mismatch", {"verdict": {"ok": False}}, NOW)
    assert not bad.exists()
    assert dest == state / "quarantine" / "20261121T120000Z" / "G_200.pth"
    assert dest.read_bytes() == b"torn"
    note = json.loads(dest.with_name("G_200.pth.json").read_text())
    assert note["original_path"] == str(bad)
    assert note["reason"] == "rejected: CRC mismatch"
    assert note["verdict"] == {"ok": False}


def test_quarantining_the_same_name_twice_keeps_both(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = store.quarantine(make(tmp_path / "ckpt_1.pt", b"one"), state, "x", {}, NOW)
    second = store.quarantine(make(tmp_path / "ckpt_1.pt", b"two"), state, "y", {}, NOW)
    assert first != second
    assert (first.read_bytes(), second.read_bytes()) == (b"one", b"two")


def test_a_verified_copy_survives_an_in_place_rewrite_of_the_original(tmp_path: Path) -> None:
    original = make(tmp_path / "ckpt" / "last.pt", b"good state")
    state = tmp_path / "state"
    snap = store.snapshot(
        original, state, "model", 450, in_place=True, verdict={"ok": True}, identity=identity(original)
    )
    assert snap is not None
    # torch.save truncates and rewrites the same inode: a hard link would not have helped.
    with original.open("r+b") as fh:
        fh.truncate(0)
        fh.write(b"torn")
    assert snap.copy.read_bytes() == b"good state"
    (listed,) = store.snapshots(state)
    assert (listed.role, listed.step, listed.original, listed.in_place) == ("model", 450, original, True)
    store.restore(snap.copy, original)
    assert original.read_bytes() == b"good state"


def test_a_copy_without_its_manifest_does_not_count(tmp_path: Path) -> None:
    state = tmp_path / "state"
    src = make(tmp_path / "ckpt_1.pt")
    snap = store.snapshot(src, state, "model", 1, in_place=False, verdict={}, identity=identity(src))
    assert snap is not None
    snap.copy.with_name(f"{snap.copy.name}.json").unlink()  # as if power failed before it was written
    assert store.snapshots(state) == []


def test_dropping_a_copy_removes_only_our_files(tmp_path: Path) -> None:
    original = make(tmp_path / "ckpt" / "ckpt_5.pt")
    state = tmp_path / "state"
    snap = store.snapshot(
        original, state, "model", 5, in_place=False, verdict={}, identity=identity(original)
    )
    assert snap is not None
    store.drop_snapshot(snap)
    assert store.snapshots(state) == []
    assert original.exists()
    assert not (state / "verified" / "step-5").exists()


def test_copies_leave_no_partial_files(tmp_path: Path) -> None:
    big = make(tmp_path / "big.pt", b"x" * (3 * 1024 * 1024))
    store.copy_file(big, tmp_path / "out" / "big.pt")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["big.pt"]
    assert (tmp_path / "out" / "big.pt").read_bytes() == big.read_bytes()


def test_a_copy_is_only_made_of_the_version_that_was_verified(tmp_path: Path) -> None:
    original = make(tmp_path / "ckpt" / "last.pt", b"verified version")
    verified = identity(original)
    original.write_bytes(b"torn newer version")  # rewritten before the copy was made
    state = tmp_path / "state"
    assert store.snapshot(original, state, "model", 7, in_place=True, verdict={}, identity=verified) is None
    assert store.snapshots(state) == []


def test_make_dirs_creates_every_missing_level_and_accepts_existing_ones(tmp_path: Path) -> None:
    deep = tmp_path / "quarantine" / "20261121T000000Z" / "sub"
    store.make_dirs(deep)
    store.make_dirs(deep)
    assert deep.is_dir()
