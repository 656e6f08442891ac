from __future__ import annotations

import math
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NoReturn

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import CapturingLogger
from tensorboardX import FileWriter, SummaryWriter
from tensorboardX.proto.summary_pb2 import Summary
from tensorboardX.proto.tensor_pb2 import TensorProto
from tensorboardX.record_writer import masked_crc32c as reference_masked_crc32c

from supervisor.signals import tensorboard as tfevents
from supervisor.signals.tensorboard import (
    EventDirReader,
    Scalar,
    crc32c,
    masked_crc32c,
    parse_event,
    read_records,
)
from tests.support.procs import wait_for

NAN, INF = float("nan"), float("inf")


def write_scalars(logdir: Path, items: Iterable[tuple[str, float, int]], suffix: str = "") -> Path:
    """A real event file written by tensorboardX: (tag, value, step) with wall time = step."""
    before = set(logdir.glob(tfevents.PATTERN))
    with SummaryWriter(str(logdir), filename_suffix=suffix) as writer:
        for tag, value, step in items:
            writer.add_scalar(tag, value, step, walltime=float(step))
    (path,) = set(logdir.glob(tfevents.PATTERN)) - before
    return path


def record_starts(data: bytes) -> list[int]:
    records, end, error = read_records(data)
    assert error is None
    assert end == len(data)
    starts = [0]
    for record in records:
        starts.append(starts[-1] + 16 + len(record))
    return starts


def triples(scalars: Iterable[Scalar]) -> list[tuple[str, float, int]]:
    return [(s.tag, s.value, s.step) for s in scalars]


def test_crc32c_matches_the_standard_check_value_and_tensorboardx() -> None:
    assert crc32c(b"123456789") == 0xE3069283
    for data in (b"", b"\x00" * 8, os.urandom(1000)):
        assert masked_crc32c(data) == reference_masked_crc32c(data)


def test_reads_finite_nan_and_inf_values(tmp_path: Path) -> None:
    items = [("loss/g/total", 1.25, 1), ("loss/g/total", NAN, 2), ("loss/d/adv", INF, 3)]
    path = write_scalars(tmp_path, [*items, ("grad/norm_g", -INF, 2**40)])
    scalars = EventDirReader(tmp_path).poll()
    assert [s.tag for s in scalars] == ["loss/g/total", "loss/g/total", "loss/d/adv", "grad/norm_g"]
    assert [s.step for s in scalars] == [1, 2, 3, 2**40]
    assert [s.wall_time for s in scalars] == [1.0, 2.0, 3.0, float(2**40)]
    assert scalars[0].value == 1.25
    assert math.isnan(scalars[1].value)
    assert scalars[2].value == INF
    assert scalars[3].value == -INF
    assert {s.file for s in scalars} == {path}


def test_scalars_with_metadata_skip_the_unknown_fields(tmp_path: Path) -> None:
    with SummaryWriter(str(tmp_path)) as writer:
        writer.add_scalar("lr", 0.5, 7, display_name="learning rate", summary_description="per epoch")
    assert triples(EventDirReader(tmp_path).poll()) == [("lr", 0.5, 7)]


def poll_until(reader: EventDirReader, count: int) -> list[Scalar]:
    """tensorboardX writes from a background thread, so its flush() is not a barrier."""
    scalars: list[Scalar] = []

    def enough() -> bool:
        scalars.extend(reader.poll())
        return len(scalars) >= count

    wait_for(enough, timeout=10.0, what=f"{count} scalars")
    return scalars


def test_reads_incrementally_while_the_writer_keeps_writing(tmp_path: Path) -> None:
    reader = EventDirReader(tmp_path)
    with SummaryWriter(str(tmp_path), flush_secs=0.01) as writer:
        assert reader.poll() == []
        for step in range(3):
            writer.add_scalar("loss", float(step), step)
        writer.flush()
        assert triples(poll_until(reader, 3)) == [("loss", 0.0, 0), ("loss", 1.0, 1), ("loss", 2.0, 2)]
        assert reader.poll() == []
        writer.add_scalar("loss", NAN, 3)
        writer.flush()
        (scalar,) = poll_until(reader, 1)
    assert scalar.step == 3
    assert math.isnan(scalar.value)
    assert reader.poll() == []


@pytest.mark.parametrize("into", [3, 14, -2], ids=["mid-header", "mid-data", "mid-footer"])
def test_a_torn_record_waits_for_its_rest(tmp_path: Path, into: int) -> None:
    full = write_scalars(tmp_path / "src", [("a", 1.0, 1), ("a", 2.0, 2), ("a", 3.0, 3)]).read_bytes()
    starts = record_starts(full)
    cut = starts[-2] + into if into > 0 else starts[-1] + into
    target = tmp_path / "eval" / "events.out.tfevents.1.host"
    target.parent.mkdir()
    target.write_bytes(full[:cut])
    reader = EventDirReader(target.parent)
    assert triples(reader.poll()) == [("a", 1.0, 1), ("a", 2.0, 2)]
    assert reader.poll() == []
    with target.open("ab") as fh:
        fh.write(full[cut:])
    assert triples(reader.poll()) == [("a", 3.0, 3)]


@pytest.mark.parametrize("into", [2, 9, 20], ids=["length", "length-crc", "data"])
def test_a_crc_mismatch_skips_the_rest_of_the_file_and_is_reported_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, into: int
) -> None:
    captured = CapturingLogger()
    monkeypatch.setattr(tfevents, "log", captured)
    path = write_scalars(tmp_path, [("a", float(step), step) for step in range(5)])
    data = bytearray(path.read_bytes())
    data[record_starts(bytes(data))[3] + into] ^= 0x40
    path.write_bytes(bytes(data))
    reader = EventDirReader(tmp_path)
    assert triples(reader.poll()) == [("a", 0.0, 0), ("a", 1.0, 1)]
    assert reader.poll() == []
    warnings = [call for call in captured.calls if call.method_name == "warning"]
    assert len(warnings) == 1
    assert "CRC mismatch" in warnings[0].kwargs["error"]


def test_picks_up_files_that_appear_later(tmp_path: Path) -> None:
    first = write_scalars(tmp_path, [("a", 1.0, 1)])
    reader = EventDirReader(tmp_path)
    assert [(s.file, s.value) for s in reader.poll()] == [(first, 1.0)]
    second = write_scalars(tmp_path, [("a", 2.0, 2)], suffix=".restart")
    assert [(s.file, s.value) for s in reader.poll()] == [(second, 2.0)]
    assert reader.poll() == []


def test_a_replaced_file_is_read_from_its_start(tmp_path: Path) -> None:
    path = write_scalars(tmp_path / "eval", [("a", 1.0, 1), ("a", 2.0, 2)])
    reader = EventDirReader(path.parent)
    assert len(reader.poll()) == 2
    other = write_scalars(tmp_path / "other", [("b", 3.0, 3), ("b", 4.0, 4), ("b", 5.0, 5)])
    os.replace(other, path)
    assert triples(reader.poll()) == [("b", 3.0, 3), ("b", 4.0, 4), ("b", 5.0, 5)]


def test_a_truncated_file_is_read_from_its_start(tmp_path: Path) -> None:
    path = write_scalars(tmp_path / "eval", [("a", float(step), step) for step in range(4)])
    reader = EventDirReader(path.parent)
    assert len(reader.poll()) == 4
    shorter = write_scalars(tmp_path / "other", [("b", 9.0, 9)]).read_bytes()
    with path.open("r+b") as fh:
        fh.truncate(0)
        fh.write(shorter)
    assert triples(reader.poll()) == [("b", 9.0, 9)]


def denied(*args: object, **kwargs: object) -> NoReturn:
    raise PermissionError("denied")


def test_an_unreadable_file_is_reported_once_and_read_when_it_can_be(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    captured = CapturingLogger()
    monkeypatch.setattr(tfevents, "log", captured)
    write_scalars(tmp_path, [("a", 1.0, 1)])
    reader = EventDirReader(tmp_path)
    with monkeypatch.context() as patch:
        patch.setattr(Path, "open", denied)
        assert reader.poll() == []
        assert reader.poll() == []
    assert [call.args for call in captured.calls] == [("cannot read event file",)]
    assert triples(reader.poll()) == [("a", 1.0, 1)]


def test_tag_filter(tmp_path: Path) -> None:
    write_scalars(
        tmp_path, [("loss_avg_50/g/total", 1.0, 50), ("learning_rate", 1e-4, 50), ("loss/d/adv", 2.0, 50)]
    )
    reader = EventDirReader(tmp_path, tags=lambda tag: tag.startswith(("loss", "loss_avg_50/")))
    assert [s.tag for s in reader.poll()] == ["loss_avg_50/g/total", "loss/d/adv"]


def test_a_missing_directory_has_no_scalars(tmp_path: Path) -> None:
    reader = EventDirReader(tmp_path / "logs" / "model" / "eval")
    assert reader.poll() == []
    write_scalars(tmp_path / "logs" / "model" / "eval", [("a", 1.0, 1)])
    assert triples(reader.poll()) == [("a", 1.0, 1)]


def test_tensor_form_scalars(tmp_path: Path) -> None:
    tensors = {
        "float_val": TensorProto(dtype=1, float_val=[NAN]),
        "double_val": TensorProto(dtype=2, double_val=[1.5]),
        "content32": TensorProto(dtype=1, tensor_content=struct.pack("<f", INF)),
        "content64": TensorProto(dtype=2, tensor_content=struct.pack("<d", -2.25)),
        "vector": TensorProto(dtype=1, float_val=[1.0, 2.0]),
        "text": TensorProto(dtype=7, string_val=[b"not a number"]),
    }
    writer = FileWriter(str(tmp_path))
    writer.add_summary(Summary(value=[Summary.Value(tag=k, tensor=t) for k, t in tensors.items()]), 12)
    writer.close()
    scalars = {s.tag: s for s in EventDirReader(tmp_path).poll()}
    assert list(scalars) == ["float_val", "double_val", "content32", "content64"]
    assert math.isnan(scalars["float_val"].value)
    assert scalars["double_val"].value == 1.5
    assert scalars["content32"].value == INF
    assert scalars["content64"].value == -2.25
    assert {s.step for s in scalars.values()} == {12}


def varint(number: int) -> bytes:
    out = bytearray()
    while True:
        out.append(number & 0x7F | (0x80 if number > 0x7F else 0))
        number >>= 7
        if not number:
            return bytes(out)


def field(number: int, wire: int, payload: bytes) -> bytes:
    length = varint(len(payload)) if wire == 2 else b""
    return varint(number << 3 | wire) + length + payload


def event(*values: bytes, step: int = 0, extra: bytes = b"") -> bytes:
    summary = b"".join(field(1, 2, value) for value in values)
    return field(1, 1, struct.pack("<d", 5.0)) + field(2, 0, varint(step)) + extra + field(5, 2, summary)


def test_parse_event_reads_unpacked_float_val_and_skips_unknown_fields() -> None:
    tensor = field(1, 0, varint(1)) + field(5, 5, struct.pack("<f", 0.5)) + field(99, 0, varint(3))
    value = field(1, 2, b"t") + field(7, 2, b"node") + field(8, 2, tensor)
    (scalar,) = parse_event(event(value, step=3, extra=field(3, 2, b"brain.Event:2")))
    assert scalar == Scalar("t", 3, 0.5, 5.0)


def test_parse_event_reads_a_negative_step() -> None:
    value = field(1, 2, b"t") + field(2, 5, struct.pack("<f", 1.0))
    assert parse_event(event(value, step=(1 << 64) - 7))[0].step == -7


@pytest.mark.parametrize(
    "data",
    [
        b"\xff" * 11,
        field(5, 2, b"\x0a\x05ab"),
        field(5, 3, b""),
        field(5, 2, field(1, 2, field(8, 2, field(5, 2, b"abc")))),
    ],
    ids=["overlong-varint", "past-the-end", "group", "ragged-packed"],
)
def test_parse_event_returns_nothing_for_malformed_bytes(data: bytes) -> None:
    assert parse_event(data) == []


def test_read_records_from_an_offset(tmp_path: Path) -> None:
    data = write_scalars(tmp_path, [("a", 1.0, 1), ("a", 2.0, 2)]).read_bytes()
    starts = record_starts(data)
    records, end, error = read_records(data, starts[2])
    assert [triples(parse_event(record)) for record in records] == [[("a", 2.0, 2)]]
    assert end == len(data)
    assert error is None
    assert read_records(data[: starts[2] + 5], starts[1]) == (
        [data[starts[1] + 12 : starts[2] - 4]],
        starts[2],
        None,
    )
    assert read_records(b"x" * 16) == ([], 0, "length CRC mismatch")
    assert read_records(b"") == ([], 0, None)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_parse_event_never_raises(data: bytes) -> None:
    parse_event(data)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(1, 255)), max_size=4), cut=st.integers(0)
)
def test_the_reader_never_raises_on_damaged_files(
    tmp_path: Path, flips: list[tuple[int, int]], cut: int
) -> None:
    source = tmp_path / "source"
    if not source.exists():
        write_scalars(source, [("a", float(step), step) for step in range(6)])
    data = bytearray(next(source.iterdir()).read_bytes())
    for position, mask in flips:
        data[position % len(data)] ^= mask
    target = tmp_path / "eval"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir()
    (target / "events.out.tfevents.1.host").write_bytes(bytes(data[: cut % (len(data) + 1)]))
    reader = EventDirReader(target)
    assert len(reader.poll()) <= 6
    reader.poll()


def test_importing_it_loads_no_protobuf_or_tensorboard() -> None:
    code = (
        "import sys, supervisor.signals.tensorboard\n"
        "heavy = {'google.protobuf', 'tensorboard', 'tensorboardX', 'torch', 'numpy'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_huge_record_is_skipped_unread_and_the_scalars_after_it_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 300 MB record (an image, audio, a histogram) between two scalars: its header says
    how long it is, so the reader steps over it without reading it into memory (it
    used to, CRC-checking it in pure Python for minutes). The file is sparse here."""
    first = write_scalars(tmp_path / "a", [("loss/g/total", 1.0, 1)])
    after = write_scalars(tmp_path / "b", [("loss/g/total", NAN, 2)])
    big_length = 300 * 1024 * 1024
    header = struct.pack("<Q", big_length)
    path = tmp_path / "events.out.tfevents.1.host"
    with path.open("wb") as fh:
        fh.write(first.read_bytes())
        big_at = fh.tell()
        fh.write(header + struct.pack("<I", masked_crc32c(header)))
        fh.seek(big_length, os.SEEK_CUR)  # the payload: a hole, never read
        fh.write(struct.pack("<I", 0))  # its data CRC: never checked either
        fh.write(after.read_bytes())
    reads: list[tuple[int, int]] = []
    original = tfevents._read_chunk

    def counted(fh: Any, *args: Any) -> bytes:
        data = original(fh, *args)
        reads.append((args[0], len(data)))
        return data

    monkeypatch.setattr(tfevents, "_read_chunk", counted)
    scalars = EventDirReader(tmp_path).poll()
    assert triples(scalars)[0] == ("loss/g/total", 1.0, 1)
    assert math.isnan(scalars[-1].value)
    assert scalars[-1].step == 2
    payload = range(big_at + 12, big_at + 12 + big_length)
    assert reads
    assert not [offset for offset, _ in reads if offset in payload]
    assert sum(size for _, size in reads) < 2 * tfevents.CHUNK_BYTES, "the big record was never read"
