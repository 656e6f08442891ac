from __future__ import annotations

import json
from pathlib import Path

import pytest

from supervisor.daemon import drift
from supervisor.daemon.drift import Fingerprint, changes, fingerprint, same

LJS: dict[str, dict[str, float]] = {
    "train": {"batch_size": 16, "learning_rate": 0.0002, "epochs": 20000},
    "data": {"sampling_rate": 22050, "filter_length": 1024},
    "model": {"inter_channels": 192, "x": 3},
}


def write_json(path: Path, value: object, indent: int | None = 2) -> Path:
    path.write_text(json.dumps(value, indent=indent))
    return path


def one_line(lines: list[str], *needles: str) -> str:
    """The single summary line whose detail (after "<path>: ") contains every needle."""
    hits = [line for line in lines if all(n in line.partition(": ")[2] for n in needles)]
    assert len(hits) == 1, (needles, lines)
    return hits[0]


def test_nested_json_edit_names_the_dotted_key_and_both_values(tmp_path: Path) -> None:
    cfg = write_json(tmp_path / "ljs.json", LJS)
    before = fingerprint([cfg])
    write_json(cfg, {**LJS, "train": {**LJS["train"], "batch_size": 8}})
    after = fingerprint([cfg])
    assert not same(before, after)
    lines = changes(before, after)
    assert len(lines) == 1
    line = one_line(lines, "train.batch_size")
    assert "train.batch_size: 16 -> 8" in line  # the form preflight's ledger events carry
    assert str(cfg) in line


def test_added_and_removed_keys(tmp_path: Path) -> None:
    cfg = write_json(tmp_path / "ljs.json", LJS)
    before = fingerprint([cfg])
    data = {**LJS["data"], "new_key": 3}
    model = {k: v for k, v in LJS["model"].items() if k != "x"}
    write_json(cfg, {**LJS, "data": data, "model": model})
    lines = changes(before, fingerprint([cfg]))
    assert len(lines) == 2
    assert "3" in one_line(lines, "data.new_key", "added")
    assert "model.x" in one_line(lines, "removed")


def test_reformatting_json_is_not_a_change(tmp_path: Path) -> None:
    cfg = write_json(tmp_path / "ljs.json", LJS, indent=4)
    before = fingerprint([cfg])
    reordered = {k: dict(reversed(v.items())) for k, v in reversed(LJS.items())}
    write_json(cfg, reordered, indent=None)
    after = fingerprint([cfg])
    assert before.files[0].size != after.files[0].size
    assert same(before, after)
    assert changes(before, after) == []


def test_json_number_types_are_told_apart(tmp_path: Path) -> None:
    cfg = write_json(tmp_path / "c.json", {"fp16_run": 1})
    before = fingerprint([cfg])
    write_json(cfg, {"fp16_run": True})
    lines = changes(before, fingerprint([cfg]))
    assert "True" in one_line(lines, "fp16_run", "1")


def test_applio_process_pids_are_ignored(tmp_path: Path) -> None:
    cfg = write_json(tmp_path / "config.json", {"train": {"epochs": 200}, "process_pids": [101, 102]})
    before = fingerprint([cfg], ignore_keys=["process_pids"])
    plain_before = fingerprint([cfg])
    write_json(cfg, {"train": {"epochs": 200}, "process_pids": [555]})
    after = fingerprint([cfg], ignore_keys=["process_pids"])
    assert same(before, after)
    assert changes(before, after) == []
    # without ignore_keys the same edit is drift
    assert "process_pids" in one_line(changes(plain_before, fingerprint([cfg])), "555")


def test_ignored_key_does_not_hide_other_changes(tmp_path: Path) -> None:
    cfg = write_json(tmp_path / "config.json", {"train": {"epochs": 200}, "process_pids": [1]})
    before = fingerprint([cfg], ignore_keys=["process_pids", "train.seed"])
    write_json(cfg, {"train": {"epochs": 300, "seed": 5}, "process_pids": [2]})
    lines = changes(before, fingerprint([cfg], ignore_keys=["process_pids", "train.seed"]))
    assert len(lines) == 1
    line = one_line(lines, "train.epochs", "200", "300")
    assert "process_pids" not in line


def test_a_deleted_file_disappears(tmp_path: Path) -> None:
    cfg = write_json(tmp_path / "ljs.json", LJS)
    before = fingerprint([cfg])
    cfg.unlink()
    after = fingerprint([cfg])
    state = after.file(cfg)
    assert state is not None
    assert state.status == "missing"
    assert state.sha256 is None
    assert state.error
    assert not same(before, after)
    assert changes(before, after) == [f"{cfg}: disappeared"]


def test_a_file_that_appears(tmp_path: Path) -> None:
    cfg = tmp_path / "s1.yaml"
    before = fingerprint([cfg])
    assert changes(before, fingerprint([cfg])) == []
    cfg.write_text("train:\n  batch_size: 8\n")
    lines = changes(before, fingerprint([cfg]))
    assert lines[0].startswith(str(cfg))
    assert "bytes" in one_line(lines, "appeared")


def test_a_file_that_becomes_unreadable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = write_json(tmp_path / "ljs.json", LJS)
    before = fingerprint([cfg])

    def denied(path: str, cap: int) -> tuple[bytes | None, str, int]:
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(drift, "_read", denied)  # chmod 0 does not stop root
    after = fingerprint([cfg])
    assert after.files[0].status == "unreadable"
    line = one_line(changes(before, after), "became unreadable")
    assert "Permission denied" in line
    assert line.startswith(str(cfg))
    monkeypatch.undo()
    assert "became readable" in one_line(changes(after, fingerprint([cfg])), "bytes")


def test_a_directory_is_unreadable_not_an_error(tmp_path: Path) -> None:
    state = fingerprint([tmp_path]).files[0]
    assert state.status == "unreadable"
    assert state.error


@pytest.mark.parametrize("structured", [False, True])
def test_yaml_line_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, structured: bool) -> None:
    # PyYAML is not a dependency: without it, a line diff; with it, a key diff.
    loader = json.loads if structured else None  # JSON is YAML, enough to stand in for it
    monkeypatch.setattr(drift, "_yaml_loader", lambda: loader)
    cfg = tmp_path / "s1.yaml"
    body = '{{"train": {{\n"batch_size": {}\n}}, "precision": "32"}}\n'
    cfg.write_text(body.format(16))
    before = fingerprint([cfg])
    cfg.write_text(body.format(8))
    lines = changes(before, fingerprint([cfg]))
    line = one_line(lines, "batch_size", "16", "8")
    assert ("train.batch_size" in line) is structured
    assert ("line 2" in line) is not structured


def test_plain_text_lines_added_and_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(drift, "_yaml_loader", lambda: None)
    cfg = tmp_path / "f5.yaml"
    cfg.write_text("model:\n  dim: 1024\n  depth: 22\noptim:\n  lr: 7.5e-5\n")
    before = fingerprint([cfg])
    cfg.write_text("model:\n  dim: 1024\noptim:\n  lr: 7.5e-5\n  grad_accumulation_steps: 2\n")
    lines = changes(before, fingerprint([cfg]))
    assert "line 3" in one_line(lines, "removed", "depth: 22")
    assert "line 5" in one_line(lines, "added", "grad_accumulation_steps: 2")


def test_toml_key_change(tmp_path: Path) -> None:
    cfg = tmp_path / "train.toml"
    cfg.write_text('[optim]\nlr = 1e-4\nname = "adamw"\n')
    before = fingerprint([cfg])
    cfg.write_text('[optim]\nname = "adamw"\nlr = 5e-5\nwarmup = 100\n')
    lines = changes(before, fingerprint([cfg]))
    assert len(lines) == 2
    assert "5e-05" in one_line(lines, "optim.lr", "0.0001")
    assert "100" in one_line(lines, "optim.warmup", "added")


def test_broken_json_falls_back_to_lines(tmp_path: Path) -> None:
    cfg = tmp_path / "ljs.json"
    cfg.write_text('{\n  "a": 1,\n  "b": 2\n}\n')
    before = fingerprint([cfg])
    cfg.write_text('{\n  "a": 1,\n  "b": \n}\n')  # a half-finished edit
    lines = changes(before, fingerprint([cfg]))
    assert "line 3" in one_line(lines, '"b": 2')


def test_big_binary_file_keeps_only_the_hash(tmp_path: Path) -> None:
    blob = tmp_path / "spk_embed.bin"
    blob.write_bytes(b"\x00\x01" * (drift.MAX_KEPT_BYTES // 2 + 10))
    before = fingerprint([blob])
    assert before.files[0].text is None
    assert before.files[0].size == drift.MAX_KEPT_BYTES + 20
    blob.write_bytes(b"\x00\x02" * (drift.MAX_KEPT_BYTES // 2 + 10))
    after = fingerprint([blob])
    old_sha, new_sha = before.files[0].sha256, after.files[0].sha256
    assert old_sha is not None
    assert new_sha is not None
    line = one_line(changes(before, after), "content changed")
    assert old_sha[:8] in line
    assert new_sha[:8] in line


def test_small_binary_is_not_kept_as_text(tmp_path: Path) -> None:
    blob = tmp_path / "tiny.bin"
    blob.write_bytes(b"\xff\xfe\x00abc")
    assert fingerprint([blob]).files[0].text is None


def test_round_trip_through_json(tmp_path: Path) -> None:
    cfg = write_json(tmp_path / "ljs.json", LJS)
    (tmp_path / "notes.txt").write_text("héllo\n")
    paths = [cfg, tmp_path / "notes.txt", tmp_path / "gone.yaml", tmp_path / "notes.txt"]
    original = fingerprint(paths, ignore_keys=["process_pids"])
    assert len(original.files) == 3  # the duplicate is fingerprinted once
    restored = Fingerprint.from_json(original.to_json())
    assert restored == original
    assert same(restored, fingerprint(paths, ignore_keys=["process_pids"]))


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        '{"version": 99, "ignore_keys": [], "files": []}',
        '{"version": 1, "ignore_keys": [1], "files": []}',
        '{"version": 1, "ignore_keys": [], "files": [{"path": "/a", "status": "gone"}]}',
        '{"version": 1, "ignore_keys": [], "files": [{"path": "/a", "status": "ok", "size": "3"}]}',
    ],
)
def test_from_json_rejects_foreign_documents(text: str) -> None:
    with pytest.raises(ValueError):
        Fingerprint.from_json(text)


def test_limit_truncates_with_a_count(tmp_path: Path) -> None:
    cfg = write_json(tmp_path / "big.json", {f"k{i:02d}": i for i in range(30)})
    before = fingerprint([cfg])
    write_json(cfg, {f"k{i:02d}": i + 1 for i in range(30)})
    after = fingerprint([cfg])
    assert len(changes(before, after, limit=30)) == 30
    lines = changes(before, after, limit=5)
    assert len(lines) == 6
    assert lines[-1] == "... and 25 more"
    assert "k00" in lines[0]


def test_long_values_are_shortened(tmp_path: Path) -> None:
    cfg = write_json(tmp_path / "c.json", {"data": {"training_files": "a" * 500}})
    before = fingerprint([cfg])
    write_json(cfg, {"data": {"training_files": "b" * 500}})
    line = one_line(changes(before, fingerprint([cfg])), "data.training_files")
    assert len(line) < len(str(cfg)) + 200
    assert "..." in line


def test_tracking_a_different_set_of_files_is_reported(tmp_path: Path) -> None:
    a = write_json(tmp_path / "a.json", {"x": 1})
    b = write_json(tmp_path / "b.json", {"y": 2})
    old, new = fingerprint([a]), fingerprint([a, b])
    assert not same(old, new)
    assert changes(old, new)[0].startswith(str(b))
    assert one_line(changes(old, new), "newly tracked")
    assert one_line(changes(new, old), "no longer tracked")
