"""Hostile and odd files: each is judged (rejected with its cause) or unknown only for a
validator that could not finish; none blocks the worker, runs code, or needs the memory
it declares. Real files, a real worker process."""

from __future__ import annotations

import asyncio
import io
import os
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from supervisor.validator.client import ValidationRequest, ValidatorClient, Verdict
from tests.support.load import scaled


@pytest.fixture(scope="module")
def validate() -> Iterator[Any]:
    client = ValidatorClient(job_timeout_s=scaled(60), memory_limit_mb=4096)
    runner = asyncio.Runner()

    def judge(path: Path, **fields: Any) -> Verdict:
        return runner.run(client.validate(ValidationRequest(str(path), **fields)))

    yield judge
    runner.run(client.close())
    runner.close()


def judged(verdict: Verdict, cause: str) -> None:
    """Rejected (never 'unknown'), with a one-line reason naming the cause."""
    assert not verdict.ok, verdict
    assert not verdict.validator_error, f"the validator failed instead of judging: {verdict.reason}"
    assert verdict.reason is not None
    assert cause in verdict.reason, verdict.reason
    assert "\n" not in verdict.reason
    assert "Please file an issue" not in verdict.reason


def save(path: Path, obj: object) -> Path:
    torch.save(obj, path)
    return path


@pytest.mark.slow
def test_a_meta_tensor_holds_no_data_to_resume_from(tmp_path: Path, validate: Any) -> None:
    path = save(tmp_path / "meta.pt", {"model": {"w": torch.empty(3, device="meta")}})
    judged(validate(path), "meta device")


def test_a_safetensors_header_nested_100k_deep(tmp_path: Path, validate: Any) -> None:
    header = b'{"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    path = tmp_path / "nested.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    judged(validate(path), "nested too deeply")


@pytest.mark.parametrize(("step", "shown"), [("²", "²"), ("9" * 5000, "5000 chars"), (10**20, str(10**20))])
def test_a_step_no_trainer_counts_with(tmp_path: Path, validate: Any, step: object, shown: str) -> None:
    path = save(tmp_path / "ckpt.pt", {"model": {"w": torch.ones(2)}, "step": step})
    verdict = validate(path, step_key="step")
    judged(verdict, "not a whole number a trainer counts with")
    assert shown in (verdict.reason or "")
    assert verdict.step is None


def test_a_name_whose_step_no_counter_reaches(tmp_path: Path, validate: Any) -> None:
    path = save(tmp_path / "G_99999999999999999999.pth", {"model": {"w": torch.ones(2)}})
    verdict = validate(path, expected_step=99999999999999999999)
    judged(verdict, "beyond any training counter")
    assert verdict.step is None


def test_a_tiny_legacy_file_declaring_16_tib(tmp_path: Path, validate: Any) -> None:
    buffer = io.BytesIO()
    torch.save({"model": {"w": torch.ones(3)}}, buffer, _use_new_zipfile_serialization=False)
    data = bytearray(buffer.getvalue())
    numel = data.find(b"K\x03N", data.find(b"X\x03\x00\x00\x00cpu"))  # the storage's numel: 3
    data[numel : numel + 2] = b"\x8a\x06" + ((16 << 40) // 4).to_bytes(6, "little")
    path = tmp_path / "legacy.pt"
    path.write_bytes(bytes(data))
    assert path.stat().st_size < 500
    judged(validate(path), "more than the whole file")


def test_an_expanded_nan_is_found_in_its_storage_without_materialising_the_view(
    tmp_path: Path, validate: Any
) -> None:
    path = save(tmp_path / "expand.pt", {"model": {"w": torch.tensor([float("nan")]).expand(2**33)}})
    started = time.monotonic()
    verdict = validate(path)
    judged(verdict, "non-finite values in model.w (NaN)")
    assert verdict.seconds < 60, "8.6 billion elements were never touched"  # (generous: a loaded machine)
    finite = save(tmp_path / "finite.pt", {"model": {"w": torch.tensor([1.5]).expand(2**33)}})
    assert validate(finite).ok
    assert time.monotonic() - started < 120


def test_a_view_shows_only_its_part_of_the_storage(tmp_path: Path, validate: Any) -> None:
    storage = torch.tensor([1.0, 2.0, float("inf"), 4.0])
    clean = save(tmp_path / "clean.pt", {"model": {"w": storage[:2]}})  # the inf is outside the view
    assert validate(clean).ok
    dirty = save(tmp_path / "dirty.pt", {"model": {"w": storage[1:3]}})
    judged(validate(dirty), "(Inf)")


def test_the_cause_of_an_unpickling_failure_not_torchs_advice(tmp_path: Path, validate: Any) -> None:
    path = tmp_path / "ckpt.pt"
    torch.serialization.set_crc32_options(False)  # (else the CRC check names the damage first)
    try:
        torch.save({"model": {"w": torch.ones(2)}}, path)
    finally:
        torch.serialization.set_crc32_options(True)
    data = bytearray(path.read_bytes())
    start = data.find(b"\x80\x02}")  # data.pkl: PROTO 2, EMPTY_DICT
    assert start > 0
    data[start + 2] = 0x93  # STACK_GLOBAL: an opcode the weights-only unpickler refuses here
    path.write_bytes(bytes(data))
    verdict = validate(path)
    judged(verdict, "unpickling failed: ")
    assert "Weights only load failed" not in (verdict.reason or "")


@pytest.mark.parametrize("kind", ["fifo", "symlink", "dangling", "directory", "socket"])
def test_what_is_no_regular_file_is_described_never_opened(tmp_path: Path, validate: Any, kind: str) -> None:
    path = tmp_path / "G_999.pth"
    if kind == "fifo":
        os.mkfifo(path)  # an open() for reading would wait for a writer for ever
    elif kind == "symlink":
        path.symlink_to("/dev/zero")
    elif kind == "dangling":
        path.symlink_to(tmp_path / "nowhere")
    elif kind == "directory":
        path.mkdir()
    else:
        import socket

        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(str(path))
    verdict = validate(path)
    want = {"fifo": "FIFO", "symlink": "symbolic link (to /dev/zero)", "dangling": "symbolic link"}
    judged(verdict, want.get(kind, kind))
    assert verdict.seconds < 30


def test_a_gradscaler_state_the_trainer_would_crash_on(tmp_path: Path, validate: Any) -> None:
    scaler_keys = ("scale", "growth_factor", "backoff_factor", "growth_interval", "_growth_tracker")
    good = {"model": {"w": torch.ones(2)}, "scaler": torch.amp.GradScaler("cpu").state_dict()}
    empty = {"model": {"w": torch.ones(2)}, "scaler": {}}  # a disabled scaler's: not loaded
    broken = {"model": {"w": torch.ones(2)}, "scaler": {"scale": 1.0}}
    check = {"when_not_empty": (("scaler", scaler_keys),)}
    assert validate(save(tmp_path / "good.pth", good), **check).ok
    assert validate(save(tmp_path / "empty.pth", empty), **check).ok
    judged(validate(save(tmp_path / "broken.pth", broken), **check), "scaler lacks growth_factor")


@pytest.mark.slow
def test_optimizer_groups_without_initial_lr(tmp_path: Path, validate: Any) -> None:
    net = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(net.parameters())
    check = {"each_item": (("optimizer.param_groups", ("initial_lr",)),)}
    judged(
        validate(save(tmp_path / "G_1.pth", {"optimizer": optimizer.state_dict()}), **check),
        "optimizer.param_groups[0] lacks initial_lr",
    )
    torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.9)  # as VITS builds it: sets initial_lr
    assert validate(save(tmp_path / "G_2.pth", {"optimizer": optimizer.state_dict()}), **check).ok


def test_the_model_shapes_are_reported_for_the_drift_check(tmp_path: Path, validate: Any) -> None:
    path = save(tmp_path / "G_1.pth", {"model": {"enc.w": torch.ones(3, 2), "dec": {"b": torch.ones(4)}}})
    verdict = validate(path, model_key="model")
    assert verdict.ok
    assert verdict.shapes == {"enc.w": [3, 2], "dec.b": [4]}


def test_a_failure_of_the_validator_itself_is_unknown_never_a_rejection() -> None:
    # A bug of ours (any exception no reader turned into a rejection) says nothing about
    # the file: rejecting would move a good checkpoint aside. The known signs of
    # malformed content stay rejections.
    from supervisor.validator.worker.checks import _failure
    from supervisor.validator.worker.job import Job

    job = Job(ValidationRequest("/nowhere"))
    reason, unknown = _failure(AttributeError("'NoneType' object has no attribute 'x'"), job, None)
    assert unknown
    assert reason.startswith("validator error: AttributeError")
    reason, unknown = _failure(RecursionError("maximum recursion depth exceeded"), job, None)
    assert not unknown
    assert "nested too deeply" in reason
