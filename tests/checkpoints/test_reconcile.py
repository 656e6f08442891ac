"""Start-up after a crash or a power cut: what an interrupted supervisor left half done is
cleared (only its own files), a move the ledger missed is recorded, and after a reboot
the state to resume from is read again before the trainer gets it.

Each half-done state below is the one the store's write order can leave at a cut:
notes before moves, manifests after copies, temporary names before renames."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from supervisor.checkpoints import store
from supervisor.checkpoints.reconcile import OUTCOME, tidy
from tests.support.load import scaled, torch_imports
from tests.support.power_cut import power_cut, powercut_config
from tests.support.procs import wait_for
from tests.support.stalling_worker import noted, stalling_env
from tests.support.twins import CLI, run_cli

NOW = store.now_utc()


def is_checkpoint(path: Path) -> bool:
    return path.suffix == ".pt"


def kept_copy(state: Path, step: int, name: str, *, manifest: bool = True) -> Path:
    copy = state / "verified" / f"step-{step}" / "model" / name
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_bytes(b"copy")
    if manifest:
        store.write_json(copy.with_name(f"{name}.json"), {"original": "x", "role": "model", "step": step})
    return copy


def note_before_move(state: Path, original: Path) -> Path:
    """What `store.quarantine` writes before it moves anything: the note."""
    folder = state / "quarantine" / "20261121T000000Z"
    folder.mkdir(parents=True)
    note = folder / f"{original.name}.json"
    store.write_json(note, {"original_path": str(original), "reason": "rejected: torn"})
    return note


def moved_aside(state: Path, checkpoints: Path, *reasons: str) -> list[Path]:
    """ckpt_30.pt, ckpt_40.pt, ... written and moved into the quarantine, one per reason."""
    checkpoints.mkdir(exist_ok=True)
    moved = []
    for n, reason in enumerate(reasons):
        path = checkpoints / f"ckpt_{30 + 10 * n}.pt"
        path.write_bytes(b"torn")
        moved.append(store.quarantine(path, state, reason, {}, NOW).destination)
    return moved


def test_unfinished_copies_of_ours_go_and_complete_ones_stay(tmp_path: Path) -> None:
    state, checkpoints = tmp_path / "state", tmp_path / "run"
    checkpoints.mkdir()
    complete = kept_copy(state, 10, "ckpt_10.pt")
    no_manifest = kept_copy(state, 20, "ckpt_20.pt", manifest=False)
    cut_copy = no_manifest.with_name(".ckpt_30.pt.partial")
    cut_copy.write_bytes(b"half")
    cut_manifest = complete.with_name(".ckpt_10.pt.json.tmp")
    cut_manifest.write_text("{")
    cut_restore = checkpoints / ".ckpt_10.pt.partial"
    cut_restore.write_bytes(b"half")
    someone_elses = checkpoints / ".notes.txt.partial"
    someone_elses.write_bytes(b"not ours")

    tidied = tidy(state, [checkpoints], is_checkpoint, set())

    assert complete.exists()
    assert complete.with_name("ckpt_10.pt.json").exists()
    for gone in (no_manifest, cut_copy, cut_manifest, cut_restore):
        assert not gone.exists(), gone
    assert not (state / "verified" / "step-20").exists(), "emptied folders go too"
    assert someone_elses.exists(), "only a partial of a checkpoint name is a restore of ours"
    (finding,) = tidied.findings
    assert finding.kind == "leftovers"
    assert "4 unfinished copies" in finding.message


def test_a_note_whose_move_never_happened_says_so_and_the_file_stays(tmp_path: Path) -> None:
    state, checkpoints = tmp_path / "state", tmp_path / "run"
    checkpoints.mkdir()
    torn = checkpoints / "ckpt_30.pt"
    torn.write_bytes(b"torn")
    note = note_before_move(state, torn)

    tidied = tidy(state, [checkpoints], is_checkpoint, set())

    assert torn.read_bytes() == b"torn", "the trainer's file is never touched here"
    assert json.loads(note.read_text())[OUTCOME].startswith("not moved")
    assert [f.kind for f in tidied.findings] == ["quarantine_unfinished"]
    again = tidy(state, [checkpoints], is_checkpoint, set())
    assert again.findings == [], "a settled note is not reported again"


def test_a_move_the_ledger_never_heard_of_is_found_and_a_recorded_one_is_not(tmp_path: Path) -> None:
    state, checkpoints = tmp_path / "state", tmp_path / "run"
    first, second = moved_aside(state, checkpoints, "rejected: torn", "rejected: empty")

    tidied = tidy(state, [checkpoints], is_checkpoint, {str(first)})

    (found,) = tidied.found_moves
    assert (found.original, found.moved_to, found.reason) == (
        str(checkpoints / "ckpt_40.pt"),
        str(second),
        "rejected: empty",
    )
    assert tidied.findings == []


def test_a_copy_across_filesystems_cut_short_goes_and_the_original_stays(tmp_path: Path) -> None:
    state, checkpoints = tmp_path / "state", tmp_path / "run"
    checkpoints.mkdir()
    original = checkpoints / "ckpt_30.pt"
    original.write_bytes(b"torn")
    folder = note_before_move(state, original).parent
    (folder / ".ckpt_30.pt.partial").write_bytes(b"to")

    tidy(state, [checkpoints], is_checkpoint, set())

    assert not (folder / ".ckpt_30.pt.partial").exists()
    assert original.read_bytes() == b"torn"


def test_a_move_across_filesystems_cut_after_its_copy_is_not_recorded_as_done(tmp_path: Path) -> None:
    """The copy was made, the original not yet removed: the original is intact in place,
    so the move did not happen, and the duplicate goes. A file the trainer saved under a
    name already moved aside (a rename, then a new save) is a new file: that move was done."""
    state, checkpoints = tmp_path / "state", tmp_path / "run"
    (renamed,) = moved_aside(state, checkpoints, "rejected: torn")
    (checkpoints / "ckpt_30.pt").write_bytes(b"the trainer's next save")
    original = checkpoints / "ckpt_90.pt"
    original.write_bytes(b"torn")
    note = note_before_move(state, original)
    store.write_json(
        note,
        {**json.loads(note.read_text()), store.NOTE_ORIGINAL_VERSION: store.version_note(os.lstat(original))},
    )
    copy = note.with_suffix("")
    copy.write_bytes(original.read_bytes())

    tidied = tidy(state, [checkpoints], is_checkpoint, set())

    assert [m.moved_to for m in tidied.found_moves] == [str(renamed)]
    assert original.read_bytes() == b"torn"
    assert not copy.exists()
    assert json.loads(note.read_text())[OUTCOME].startswith("not moved")
    assert [f.kind for f in tidied.findings] == ["quarantine_unfinished"]


def test_a_file_gone_from_both_places_is_reported_not_invented(tmp_path: Path) -> None:
    state = tmp_path / "state"
    note = note_before_move(state, tmp_path / "run" / "ckpt_30.pt")
    note.with_name("broken.pt.json").write_text("{not json")

    tidied = tidy(state, [tmp_path / "missing"], is_checkpoint, set())

    assert sorted(f.kind for f in tidied.findings) == ["quarantine_lost", "quarantine_note"]
    assert json.loads(note.read_text())[OUTCOME].startswith("gone")


def test_a_recorded_move_is_settled_whatever_the_user_did_with_the_file_since(tmp_path: Path) -> None:
    state, checkpoints = tmp_path / "state", tmp_path / "run"
    deleted, put_back = moved_aside(state, checkpoints, "rejected: torn", "rejected: torn")
    deleted.unlink()  # reviewed and deleted by hand, as config.example.toml suggests
    put_back.rename(checkpoints / "ckpt_40.pt")
    notes = {p: p.read_text() for p in state.glob("quarantine/*/*.json")}

    tidied = tidy(state, [checkpoints], is_checkpoint, {str(deleted), str(put_back)})

    assert tidied.findings == []
    assert tidied.found_moves == []
    assert {p: p.read_text() for p in notes} == notes, "notes of recorded moves are left as they are"


def test_a_note_that_is_not_ours_to_read_never_stops_the_tidying(tmp_path: Path) -> None:
    state = tmp_path / "state"
    note = note_before_move(state, tmp_path / "run" / "ckpt_30.pt")
    note.write_text(json.dumps({"original_path": None, "reason": "rejected"}))
    note.with_name("list.pt.json").write_text("[1, 2]")
    leftover = kept_copy(state, 10, "ckpt_10.pt", manifest=False)

    tidied = tidy(state, [tmp_path / "run"], is_checkpoint, set())

    assert not leftover.exists(), "the rest is tidied all the same"
    assert [f.kind for f in tidied.findings] == ["leftovers"]


def cut_after_step_20(tmp_path: Path, **checkpoints: Any) -> tuple[Path, Path]:
    """A run of the power-cut twin cut once a verified copy of step 20 exists; the
    config and ckpt_20.pt. (A save of step 30 already begun is removed.)"""
    config = powercut_config(tmp_path, 30, **checkpoints)
    state = tmp_path / "state"
    with (tmp_path / "supervisor.out").open("wb") as out:
        supervisor = subprocess.Popen([*CLI, "run", "-c", str(config)], stdout=out, stderr=out)
    try:
        wait_for(
            lambda: list(state.glob("verified/step-20/*/ckpt_20.pt.json")), 60, "a verified copy of step 20"
        )
    finally:
        power_cut(supervisor)
    checkpoints_dir = tmp_path / "run" / "checkpoints"
    (checkpoints_dir / "ckpt_30.pt").unlink(missing_ok=True)
    return config, checkpoints_dir / "ckpt_20.pt"


def as_after_a_reboot(ledger_path: Path, how: str) -> None:
    with sqlite3.connect(ledger_path) as ledger:
        if how == "first start after the reboot":
            ledger.execute("UPDATE meta SET value = 'an-earlier-boot' WHERE key = 'boot_id'")
        else:  # the first start noted the reboot, then died before reading anything again
            ledger.execute(
                "INSERT INTO meta (key, value) VALUES ('verdicts_suspect_before', ?)", (repr(time.time()),)
            )


@pytest.mark.parametrize("how", ["first start after the reboot", "a later start before the re-read"])
def test_after_a_reboot_a_verified_file_whose_data_never_reached_the_disk_is_not_resumed_from(
    tmp_path: Path, how: str
) -> None:
    """The page cache held ckpt_20's data when it was verified; the power cut lost it,
    while its size, inode and times (what the ledger keys a verdict by) survived. After
    the reboot the supervisor reads the state to resume from again, finds the damage,
    moves the file aside and restores its verified copy (written durably, fsynced) —
    also when a supervisor started after the reboot died before reading it again."""
    config, damaged = cut_after_step_20(tmp_path)
    state = tmp_path / "state"
    size = damaged.stat().st_size
    with damaged.open("r+b") as fh:
        fh.write(bytes(size))  # what delayed allocation leaves after a cut: zeros
    st = os.stat(damaged)
    with sqlite3.connect(state / "ledger.sqlite3") as ledger:
        ledger.execute(
            "UPDATE checkpoints SET mtime_ns = ?, ctime_ns = ? WHERE path = ?",
            (st.st_mtime_ns, st.st_ctime_ns, str(damaged)),
        )
    as_after_a_reboot(state / "ledger.sqlite3", how)

    result = run_cli("run", "-c", str(config), timeout=120)

    assert result.returncode == 0, result.stdout[-3000:]
    log = (state / "logs" / "trainer.log").read_text()
    assert "resumed from ckpt_20.pt at step 20" in log.rsplit("=== train-supervisor", 1)[1]
    assert "failed to load" not in log
    (moved,) = state.glob("quarantine/*/ckpt_20.pt")
    assert moved.read_bytes() == bytes(size), "the damaged file is kept, aside"
    with sqlite3.connect(state / "ledger.sqlite3") as ledger:
        kinds = [k for (k,) in ledger.execute("SELECT kind FROM events")]
        reasons = [r for (r,) in ledger.execute("SELECT reason FROM checkpoints WHERE ok = 0")]
    assert ("rebooted" in kinds) == (how == "first start after the reboot")
    assert any(r.startswith("changed on disk since it was verified (power loss?)") for r in reasons), reasons


def test_after_a_reboot_a_file_the_validator_cannot_read_again_is_not_resumed_from(tmp_path: Path) -> None:
    # A fresh worker imports torch before it answers: what works must fit, when busy too.
    config, ckpt = cut_after_step_20(tmp_path, validation_timeout_s=round(torch_imports(3), 1))
    state = tmp_path / "state"
    as_after_a_reboot(state / "ledger.sqlite3", "first start after the reboot")
    attempts = (state / "logs" / "trainer.log").read_text().count("=== train-supervisor")
    stalled = subprocess.run(
        [*CLI, "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=scaled(120),
        env={**os.environ, **stalling_env(ckpt, tmp_path / "stalls")},  # the worker hangs on this file
        check=False,
    )
    assert stalled.returncode == 3, stalled.stdout[-3000:]
    # The worker ran with the hook; whether it got to the file before the timeout or was
    # still importing torch (a loaded machine), it never answered.
    assert noted(tmp_path / "stalls", "started") >= 1, "the supervisor's worker ran with our PYTHONPATH"
    log = (state / "logs" / "trainer.log").read_text()
    assert log.count("=== train-supervisor") == attempts, "nothing was launched on an unconfirmed file"
    assert ckpt.exists(), "a file the validator could not judge stays where it is"
    with sqlite3.connect(state / "ledger.sqlite3") as ledger:
        messages = [m for (m,) in ledger.execute("SELECT message FROM events WHERE kind = 'unverifiable'")]
    assert any(m.startswith(f"could not read {ckpt} again") for m in messages), messages

    again = run_cli("run", "-c", str(config), timeout=120)  # the validator works again

    assert again.returncode == 0, again.stdout[-3000:]
    log = (state / "logs" / "trainer.log").read_text()
    assert "resumed from ckpt_20.pt at step 20" in log.rsplit("=== train-supervisor", 1)[1]


def test_without_a_reboot_verdicts_stand_and_the_boot_is_remembered(tmp_path: Path) -> None:
    config = powercut_config(tmp_path, 20)
    assert run_cli("run", "-c", str(config)).returncode == 0
    assert run_cli("run", "-c", str(config), "--again").returncode == 0
    with sqlite3.connect(tmp_path / "state" / "ledger.sqlite3") as ledger:
        kinds = [k for (k,) in ledger.execute("SELECT kind FROM events")]
        boot = ledger.execute("SELECT value FROM meta WHERE key = 'boot_id'").fetchone()[0]
    assert "rebooted" not in kinds
    assert boot == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
