"""Hostile and odd entries and filesystems around the run directory: links, directories
and FIFOs named like checkpoints, moves across filesystems, a read-only checkpoint
directory, a full state disk, a file still being written. Real files, real mounts (a
size-limited tmpfs, a read-only bind mount; skipped where mounting is refused), the real
CLI and daemon. Nothing outside the run and its state_dir is ever touched."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from supervisor.checkpoints import copies, store
from tests.support.load import scaled
from tests.support.mounts import read_only, tmpfs
from tests.support.procs import wait_for
from tests.support.run_dirs import generic_config, good, writer_command
from tests.support.twins import run_cli, twin_command

NOW = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)


def plan_apply(config: Path) -> tuple[int, dict[str, Any]]:
    result = run_cli("plan", "-c", str(config), "--apply", "--json")
    data: dict[str, Any] = json.loads(result.stdout) if result.stdout.strip() else {"stderr": result.stderr}
    return result.returncode, data


def quarantine_entries(state: Path) -> list[Path]:
    return sorted(p for p in state.glob("quarantine/*/*") if not p.name.endswith(".json"))


def recorded_moves(state: Path) -> list[str]:
    with sqlite3.connect(state / "ledger.sqlite3") as ledger:
        return [Path(p).name for (p,) in ledger.execute("SELECT original FROM quarantined")]


@pytest.mark.slow
def test_a_link_named_like_the_newest_checkpoint_goes_aside_as_a_link_never_its_data(tmp_path: Path) -> None:
    """`ckpt_999.pt -> /dev/zero` would have been copied into the quarantine until the
    state disk filled. The link itself moves (recreated on the state filesystem, which is
    another one here); a link the trainer would not pick, to a file outside the run, is
    left where it is, and that file is never read or written."""
    checkpoints = tmp_path / "run" / "checkpoints"
    good(checkpoints / "ckpt_10.pt", 10)
    (checkpoints / "ckpt_999.pt").symlink_to("/dev/zero")
    outside = tmp_path / "outside" / "secret.bin"
    outside.parent.mkdir()
    outside.write_bytes(b"not a checkpoint")
    before = os.stat(outside)
    (checkpoints / "ckpt_5.pt").symlink_to(outside)
    with tmpfs(tmp_path / "state-fs", "16m") as state:
        code, data = plan_apply(generic_config(tmp_path, state))
        assert code == 0, data
        assert data["target_step"] == 10
        (moved,) = quarantine_entries(state)
        assert moved.name == "ckpt_999.pt"
        assert moved.is_symlink()
        assert os.readlink(moved) == "/dev/zero"
        assert "symbolic link" in next(m["reason"] for m in data["moves"])
        assert recorded_moves(state) == ["ckpt_999.pt"]
        assert os.statvfs(state).f_bfree * os.statvfs(state).f_frsize > 15 * 1024 * 1024, "no data was copied"
    assert (checkpoints / "ckpt_5.pt").is_symlink(), "a link the trainer would not pick stays"
    assert "ckpt_5.pt" in data["summary"]
    assert "left alone" in data["summary"]
    after = os.stat(outside)
    assert outside.read_bytes() == b"not a checkpoint"
    assert (after.st_mtime_ns, after.st_ino) == (before.st_mtime_ns, before.st_ino)


@pytest.mark.parametrize("state_fs", ["same", "other"])
@pytest.mark.slow
def test_a_directory_named_like_the_newest_checkpoint_is_in_the_plan(tmp_path: Path, state_fs: str) -> None:
    """Listed by the trainer's own glob or listdir, a directory would be its pick. On the
    state's filesystem it moves aside whole; on another it cannot be moved safely: the
    plan refuses and says to move it, and nothing is moved."""
    checkpoints = tmp_path / "run" / "checkpoints"
    good(checkpoints / "ckpt_10.pt", 10)
    folder = checkpoints / "ckpt_9000.pt"
    good(folder / "inside.pt", 1)

    def check(state: Path) -> None:
        code, data = plan_apply(generic_config(tmp_path, state))
        if state_fs == "same":
            assert code == 0, data
            (moved,) = quarantine_entries(state)
            assert moved.is_dir()
            assert (moved / "inside.pt").exists()
            assert not folder.exists()
        else:
            assert code == 1, data
            assert "move it out of the checkpoint directory yourself" in data["problem"]
            assert (folder / "inside.pt").exists()
            assert recorded_moves(state) == []

    if state_fs == "same":
        check(tmp_path / "state")
    else:
        with tmpfs(tmp_path / "state-fs") as state:
            check(state)


@pytest.mark.slow
def test_a_fifo_named_like_the_newest_checkpoint_is_moved_never_opened(tmp_path: Path) -> None:
    checkpoints = tmp_path / "run" / "checkpoints"
    good(checkpoints / "ckpt_10.pt", 10)
    os.mkfifo(checkpoints / "ckpt_20.pt")  # an open() for reading would wait for a writer
    code, data = plan_apply(generic_config(tmp_path, tmp_path / "state", validation_timeout_s=600))
    assert code == 0, data
    (moved,) = quarantine_entries(tmp_path / "state")
    assert moved.name == "ckpt_20.pt"
    assert moved.is_fifo()
    assert "FIFO" in data["moves"][0]["reason"]


@pytest.mark.slow
def test_a_cross_filesystem_move_that_cannot_remove_the_original_records_nothing(tmp_path: Path) -> None:
    """The checkpoint directory is read-only and the quarantine on another filesystem:
    the copy is made, the original cannot go, so the copy goes again and the note says
    so. The plan refuses (the trainer would pick the torn file), the ledger records no
    move, and each try leaves no further copy."""
    checkpoints = tmp_path / "run" / "checkpoints"
    good(checkpoints / "ckpt_10.pt", 10)
    torn = checkpoints / "ckpt_20.pt"
    data20 = good(torn, 20).read_bytes()
    torn.write_bytes(data20[: len(data20) // 2])
    with tmpfs(tmp_path / "state-fs") as state, read_only(checkpoints):
        config = generic_config(tmp_path, state)
        for _ in range(2):
            code, data = plan_apply(config)
            assert code == 1, data
            assert "could not move" in data["problem"]
            assert "Read-only file system" in data["problem"]
        assert quarantine_entries(state) == [], "no copy is left of a file that stayed in place"
        notes = [json.loads(p.read_text()) for p in state.glob("quarantine/*/*.json")]
        assert notes
        assert all(n["outcome"].startswith("not moved") for n in notes)
        assert recorded_moves(state) == []
    assert torn.read_bytes() == data20[: len(data20) // 2]


def test_a_source_that_changes_while_it_is_copied_across_filesystems_stays_and_both_are_kept(
    tmp_path: Path,
) -> None:
    source = tmp_path / "run" / "ckpt_30.pt"
    source.parent.mkdir(parents=True)
    source.write_bytes(os.urandom(32 * 1024 * 1024))
    stop = threading.Event()

    def writer() -> None:
        with source.open("ab") as fh:
            while not stop.is_set():
                fh.write(b"x" * 4096)
                fh.flush()

    with tmpfs(tmp_path / "state-fs", "256m") as state:
        thread = threading.Thread(target=writer)
        thread.start()
        try:
            result = store.quarantine(source, state, "rejected: torn", {}, NOW)
        finally:
            stop.set()
            thread.join()
        assert not result.moved
        assert result.why_not is not None
        assert "changed while it was copied" in result.why_not
        assert source.exists(), "the original is never removed after a copy of another version"
        assert result.destination.exists(), "and the copy is kept, named in the note"


def test_a_source_removed_while_it_is_copied_across_filesystems_is_moved_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The trainer prunes the file while it is copied out: the whole copy is all there is
    # of it, so the move is done (and recorded), not a stray copy beside a note saying no.
    source = tmp_path / "run" / "ckpt_30.pt"
    source.parent.mkdir(parents=True)
    data = os.urandom(1 << 20)
    source.write_bytes(data)
    copy_whole = store.copy_from

    def pruned_meanwhile(*args: Any, **kwargs: Any) -> None:
        copy_whole(*args, **kwargs)
        source.unlink()

    monkeypatch.setattr(store, "copy_from", pruned_meanwhile)
    with tmpfs(tmp_path / "state-fs", "16m") as state:
        result = store.quarantine(source, state, "rejected: torn", {}, NOW)
        assert result.moved, result.why_not
        assert result.destination.read_bytes() == data
        assert not source.exists()


def test_a_planted_link_under_our_temporary_name_is_never_written_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "state" / "verified" / "step-10" / "model" / "ckpt_10.pt"
    copy.parent.mkdir(parents=True)
    copy.write_bytes(b"verified bytes")
    target = tmp_path / "run" / "ckpt_10.pt"
    target.parent.mkdir()
    victim = tmp_path / "elsewhere.txt"
    victim.write_bytes(b"someone else's file")
    planted = ".ckpt_10.pt.deadbeef.partial"
    (target.parent / planted).symlink_to(victim)
    monkeypatch.setattr(store, "temporary_name", lambda name: planted)
    with pytest.raises(FileExistsError):
        copies.restore(copy, target)
    assert victim.read_bytes() == b"someone else's file"
    assert not target.exists()


@pytest.mark.slow
def test_a_file_still_being_written_is_never_moved_and_the_writer_is_named(tmp_path: Path) -> None:
    checkpoints = tmp_path / "run" / "checkpoints"
    good(checkpoints / "ckpt_10.pt", 10)
    growing = checkpoints / "ckpt_20.pt"
    growing.write_bytes(b"partial")
    ready = tmp_path / "ready"
    writer = subprocess.Popen(writer_command(growing, ready))
    try:
        wait_for(ready.exists, 30, "the writer to open the file")
        code, data = plan_apply(generic_config(tmp_path, tmp_path / "state", quiet_s=0.2))
        assert code == 1, data
        assert f"still being written by pid {writer.pid}" in data["problem"]
        assert growing.exists()
        assert quarantine_entries(tmp_path / "state") == []
    finally:
        writer.kill()
        writer.wait()
    code, data = plan_apply(generic_config(tmp_path, tmp_path / "state", quiet_s=0.2))
    assert code == 0, data
    assert [Path(m["path"]).name for m in data["moves"]] == ["ckpt_20.pt"], "once nobody writes it"


@pytest.mark.slow
def test_a_full_state_disk_costs_the_verified_copies_never_the_run(tmp_path: Path) -> None:
    """Checkpoints of ~3 MB, a state disk of 12 MB: copies stop where they would eat into
    the free space kept for the ledger (warned once, as disk_space); the run goes on and
    completes, and no partial copy is left behind."""
    run_dir = tmp_path / "run"
    command = twin_command("powercut_twin.py", str(run_dir), "40", "10")
    with tmpfs(tmp_path / "state-fs", "12m") as state:
        config = generic_config(tmp_path, state, command=command, keep_verified=3, state_reserve_mb=5)
        result = subprocess.run(
            [sys.executable, "-m", "supervisor.cli", "run", "-c", str(config)],
            capture_output=True,
            text=True,
            timeout=scaled(300),
            env={**os.environ, "POWERCUT_TWIN_WIDTH": "512"},
            check=False,
        )
        assert result.returncode == 0, result.stdout[-3000:]
        with sqlite3.connect(state / "ledger.sqlite3") as ledger:
            warnings = [m for (m,) in ledger.execute("SELECT message FROM events WHERE kind = 'disk_space'")]
        assert any("no verified copy" in w and "kept for the ledger" in w for w in warnings), warnings
        assert not [p for p in state.rglob("*") if p.name.endswith((".partial", ".tmp"))]
        assert len(list(state.glob("verified/step-*/*/*.pt"))) < 4


def fill(fs: Path, leave: int) -> None:
    """Fill the filesystem at `fs` until less than `leave` bytes are free."""
    with (fs / "filler").open("wb") as fh, contextlib.suppress(OSError):
        while os.statvfs(fs).f_bavail * os.statvfs(fs).f_frsize > leave:
            fh.write(b"\0" * 16384)
            fh.flush()


@pytest.mark.slow
def test_a_state_disk_too_full_to_take_a_file_aside_refuses_the_launch_and_moves_nothing(
    tmp_path: Path,
) -> None:
    """What a full state disk cannot cost is a move aside: a file that must go out of the
    trainer's way (here across filesystems, so its bytes must fit) stays where it is,
    whole, and the launch is refused saying why. The note says it was not moved."""
    ckpt = tmp_path / "run" / "checkpoints"
    good(ckpt / "ckpt_10.pt", 10)
    with tmpfs(tmp_path / "state-fs", "4m") as state:
        config = generic_config(tmp_path, state)
        assert plan_apply(config)[0] == 0
        fill(state, leave=1 << 20)
        torn = os.urandom(3 << 20)
        (ckpt / "ckpt_20.pt").write_bytes(torn)
        (ckpt / "ckpt_15.pt").write_bytes(b"torn, and small enough to fit")
        code, data = plan_apply(config)
        assert code == 1, data
        assert "could not move" in json.dumps(data), data
        assert "No space left" in json.dumps(data), data
        assert data["applied"] is True, "partly: the small one went aside"
        assert (ckpt / "ckpt_20.pt").read_bytes() == torn
        assert sorted(p.name for p in ckpt.iterdir()) == ["ckpt_10.pt", "ckpt_20.pt"]
        assert [p.name for p in quarantine_entries(state)] == ["ckpt_15.pt"]
        assert recorded_moves(state) == ["ckpt_15.pt"]
        text = run_cli("plan", "-c", str(config), "--apply")
        assert "not applied: refused before anything was changed" in text.stdout, text.stdout
        notes = list(state.glob("quarantine/*/ckpt_20*.json"))  # one a try
        assert len(notes) == 2
        for note in notes:
            assert json.loads(note.read_text())[store.NOTE_OUTCOME].startswith("not moved")
        assert not [p for p in state.rglob("*") if p.name.endswith((".partial", ".tmp"))]


@pytest.mark.slow
def test_the_supervisor_tries_again_until_there_is_room_to_take_a_file_aside(tmp_path: Path) -> None:
    """The same full quarantine disk under `run`: no launch while the file cannot go
    aside, tries again with backoff, and once room is made the run goes on."""
    ckpt = tmp_path / "run" / "checkpoints"
    good(ckpt / "ckpt_10.pt", 10)
    with tmpfs(tmp_path / "state-fs", "4m") as state:
        started = tmp_path / "launched"
        config = generic_config(
            tmp_path,
            state,
            command=[sys.executable, "-c", f"open({str(started)!r}, 'w')"],
            restart={"backoff_initial_s": 2, "backoff_max_s": 2, "max_attempts_without_progress": 50},
        )
        assert plan_apply(config)[0] == 0
        fill(state, leave=1 << 20)
        torn = os.urandom(3 << 20)
        (ckpt / "ckpt_20.pt").write_bytes(torn)
        with subprocess.Popen(
            [sys.executable, "-m", "supervisor.cli", "run", "-c", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ) as supervisor:
            assert supervisor.stdout is not None
            for line in supervisor.stdout:
                if "trying again" in line:
                    break
            assert not started.exists(), "never launched while the file is in the way"
            (state / "filler").unlink()
            out, _ = supervisor.communicate(timeout=scaled(300))
        assert supervisor.returncode == 0, out[-3000:]
        assert started.exists()
        (moved,) = quarantine_entries(state)
        assert moved.read_bytes() == torn
        assert sorted(p.name for p in ckpt.iterdir()) == ["ckpt_10.pt"]


@pytest.mark.slow
def test_a_state_disk_with_no_room_for_the_ledger_is_named_as_full(tmp_path: Path) -> None:
    good(tmp_path / "run" / "checkpoints" / "ckpt_10.pt", 10)
    with tmpfs(tmp_path / "state-fs", "2m") as state:
        config = generic_config(tmp_path, state)
        assert plan_apply(config)[0] == 0
        fill(state, leave=0)
        result = run_cli("plan", "-c", str(config), "--apply")
        assert result.returncode == 1, result.stderr  # the README's "the ledger cannot be opened"
        (line,) = result.stderr.strip().splitlines()
        assert "cannot open ledger" in line, line
        assert "filesystem is full" in line, line


@pytest.mark.slow
def test_a_checkpoint_directory_replaced_between_two_starts_is_said(tmp_path: Path) -> None:
    """Within a start the directory is pinned (a swap refuses every move); between two
    starts a swap (for a link to another directory) is said once, as a warning."""
    ckpt = tmp_path / "run" / "checkpoints"
    good(ckpt / "ckpt_10.pt", 10)
    state = tmp_path / "state"
    config = generic_config(tmp_path, state)
    assert plan_apply(config)[0] == 0
    elsewhere = tmp_path / "elsewhere"
    good(elsewhere / "ckpt_30.pt", 30)
    ckpt.rename(tmp_path / "run" / "old-checkpoints")
    ckpt.symlink_to(elsewhere)
    assert plan_apply(config)[0] == 0
    assert plan_apply(config)[0] == 0

    with sqlite3.connect(state / "ledger.sqlite3") as ledger:
        said = [
            m for (m,) in ledger.execute("SELECT message FROM events WHERE kind = 'checkpoint_dir_moved'")
        ]
    (message,) = said
    assert str(elsewhere) in message
    assert str(tmp_path / "run" / "checkpoints") in message
