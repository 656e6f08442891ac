"""The checkpoint validator against real files on disk and a real worker process."""

from __future__ import annotations

import asyncio
import json
import math
import os
import pickle
import signal
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from supervisor.core.file_version import FileVersion
from supervisor.validator.client import ValidationRequest, ValidatorClient, Verdict
from supervisor.validator.worker.content import lookup
from supervisor.validator.worker.crc import crc32_combine
from tests.support import ckpt_factory as ck
from tests.support.load import scaled
from tests.support.procs import alive, wait_for
from tests.support.stalling_worker import noted, stalling_env


class Validator:
    """One shared worker for the module; its event loop lives as long as the runner."""

    def __init__(self, client: ValidatorClient) -> None:
        self.client = client
        self.runner = asyncio.Runner()

    def __call__(self, path: Path, **fields: Any) -> Verdict:
        return self.runner.run(self.client.validate(ValidationRequest(str(path), **fields)))

    def close(self) -> None:
        self.runner.run(self.client.close())
        self.runner.close()


@pytest.fixture(scope="module")
def validate() -> Iterator[Validator]:
    validator = Validator(ValidatorClient(job_timeout_s=scaled(60)))
    yield validator
    validator.close()


def pid_of(client: ValidatorClient) -> int | None:
    return client.pid  # (a call: mypy must not narrow it across awaits)


def rejected(verdict: Verdict, reason_start: str) -> bool:
    assert not verdict.ok, verdict
    assert verdict.reason is not None
    assert verdict.reason.startswith(reason_start), verdict.reason
    return True


# --- good files -----------------------------------------------------------------------


def test_good_checkpoint_is_accepted_with_its_step_and_epoch(tmp_path: Path, validate: Validator) -> None:
    path = ck.write_torch(tmp_path / "ckpt_1800.pt", step=1800, epoch=7)
    verdict = validate(
        path, required_keys=("model", "optimizer"), step_key="step", epoch_key="epoch", expected_step=1800
    )
    assert verdict.ok, verdict
    assert verdict.reason is None
    assert (verdict.step, verdict.epoch, verdict.format) == (1800, 7, "torch-zip")
    st = path.stat()
    assert verdict.version == FileVersion.of(st)
    assert verdict.checksum is not None
    assert len(verdict.checksum) == 8
    assert not verdict.notes
    assert not verdict.validator_error


def test_step_may_be_a_zero_dim_tensor_and_keys_may_nest(tmp_path: Path, validate: Validator) -> None:
    path = ck.write_torch(tmp_path / "c.pt", ck.checkpoint(step=42, step_as_tensor=True))
    verdict = validate(path, required_keys=("model.enc.weight", "optimizer.param_groups"), step_key="step")
    assert verdict.ok, verdict
    assert verdict.step == 42


def test_legacy_torch_file_is_accepted(tmp_path: Path, validate: Validator) -> None:
    path = ck.write_torch(tmp_path / "legacy.pt", step=300, legacy=True)
    assert not path.read_bytes().startswith(b"PK")
    verdict = validate(path, step_key="step", required_keys=("model",))
    assert verdict.ok, verdict
    assert (verdict.format, verdict.step) == ("torch-legacy", 300)
    assert verdict.checksum == f"{zlib.crc32(path.read_bytes()):08x}"


def test_safetensors_file_is_accepted_with_its_step_from_metadata(
    tmp_path: Path, validate: Validator
) -> None:
    path = ck.write_safetensors(tmp_path / "model.safetensors", metadata={"step": "500"})
    verdict = validate(path, step_key="step", expected_step=500, required_keys=("enc.weight",))
    assert verdict.ok, verdict
    assert (verdict.format, verdict.step) == ("safetensors", 500)
    assert verdict.checksum == f"{zlib.crc32(path.read_bytes()):08x}"


def test_checkpoint_written_without_crcs_is_accepted_with_a_note(tmp_path: Path, validate: Validator) -> None:
    path = ck.write_torch(tmp_path / "nocrc.pt", crc=False)
    verdict = validate(path)
    assert verdict.ok, verdict
    assert any("CRC-32 disabled" in note for note in verdict.notes)


# --- damaged files --------------------------------------------------------------------


def test_missing_and_empty_files_are_rejected(tmp_path: Path, validate: Validator) -> None:
    assert rejected(validate(tmp_path / "nope.pt"), "not found")
    verdict = validate(ck.write_empty(tmp_path / "empty.pt"))
    assert rejected(verdict, "empty file")
    assert verdict.version.size == 0


def test_truncation_anywhere_is_rejected(tmp_path: Path, validate: Validator) -> None:
    good = ck.write_torch(tmp_path / "good.pt")
    data = good.read_bytes()
    points = ck.truncation_points(len(data))
    assert len(points) >= 15
    for at in points:
        path = tmp_path / f"cut_{at}.pt"
        path.write_bytes(data[:at])
        verdict = validate(path)
        assert not verdict.ok, f"cut at {at} of {len(data)} was accepted"
        assert verdict.reason is not None
        assert verdict.reason.startswith(("truncated", "unknown format")), (at, verdict.reason)


def test_truncated_legacy_file_is_rejected(tmp_path: Path, validate: Validator) -> None:
    data = ck.write_torch(tmp_path / "good.pt", legacy=True).read_bytes()
    for at in ck.truncation_points(len(data), step_fraction=0.15):
        path = tmp_path / f"cut_{at}.pt"
        path.write_bytes(data[:at])
        assert not validate(path).ok, f"cut at {at} of {len(data)} was accepted"


def test_bit_flip_in_tensor_data_is_rejected_though_torch_loads_it(
    tmp_path: Path, validate: Validator
) -> None:
    path = ck.write_torch(tmp_path / "flipped.pt")
    record = ck.flip_bit_in_tensor_data(path)
    torch.load(path, weights_only=True)  # torch itself does not notice
    assert rejected(validate(path), f"CRC mismatch in record {record}")


def test_bit_flip_in_data_pkl_is_reported_as_crc_mismatch(tmp_path: Path, validate: Validator) -> None:
    path = ck.write_torch(tmp_path / "c.pt")
    offset, size = ck.record_data_span(path, "c/data.pkl")
    ck.flip_bit(path, offset + size // 2, 1)
    assert rejected(validate(path), "CRC mismatch in record c/data.pkl")


@pytest.mark.parametrize(("value", "kind"), [(math.nan, "NaN"), (math.inf, "Inf"), (-math.inf, "Inf")])
def test_nonfinite_weights_are_rejected_naming_the_tensor(
    tmp_path: Path, validate: Validator, value: float, kind: str
) -> None:
    path = ck.write_nonfinite(tmp_path / "nan.pt", value, "model.enc.weight")
    assert rejected(validate(path), f"non-finite values in model.enc.weight ({kind})")
    assert validate(path, check_finite=False).ok


def test_nan_in_half_precision_optimizer_state_is_named(tmp_path: Path, validate: Validator) -> None:
    obj = ck.checkpoint()
    obj["model"]["dec.weight"].view(-1)[0] = math.nan
    obj["optimizer"]["state"][0]["exp_avg"].view(-1)[-1] = math.inf
    verdict = validate(ck.write_torch(tmp_path / "c.pt", obj))
    assert rejected(verdict, "non-finite values in model.dec.weight (NaN) and 1 more tensor")


def test_huge_but_finite_values_are_accepted(tmp_path: Path, validate: Validator) -> None:
    obj = {"model": {"w": torch.full((1000,), 60000.0).half(), "x": torch.full((10,), 3e38)}}
    assert validate(ck.write_torch(tmp_path / "big_values.pt", obj)).ok


def test_missing_required_key_is_rejected(tmp_path: Path, validate: Validator) -> None:
    path = ck.write_torch(tmp_path / "c.pt")
    assert rejected(validate(path, required_keys=("model", "scheduler")), "missing key: scheduler")
    assert rejected(validate(path, required_keys=("model.nope", "ema")), "missing keys: model.nope, ema")
    assert rejected(validate(path, step_key="global_step"), "missing key: global_step")


def test_step_and_epoch_mismatch_are_rejected(tmp_path: Path, validate: Validator) -> None:
    path = ck.write_torch(tmp_path / "ckpt_2000.pt", step=1800, epoch=3)
    verdict = validate(path, step_key="step", expected_step=2000)
    assert rejected(verdict, "step mismatch: name says 2000, content says 1800")
    assert rejected(
        validate(path, epoch_key="epoch", expected_epoch=4), "epoch mismatch: name says 4, content says 3"
    )


def test_truncated_safetensors_is_rejected(tmp_path: Path, validate: Validator) -> None:
    data = ck.write_safetensors(tmp_path / "good.safetensors").read_bytes()
    for at in [*ck.truncation_points(len(data), step_fraction=0.15), 9, 20]:
        path = tmp_path / f"cut_{at}.safetensors"
        path.write_bytes(data[:at])
        verdict = validate(path)
        assert not verdict.ok, f"cut at {at} of {len(data)} was accepted"


def test_safetensors_with_corrupt_header_or_trailing_bytes_is_rejected(
    tmp_path: Path, validate: Validator
) -> None:
    path = ck.write_safetensors(tmp_path / "bad.safetensors")
    ck.corrupt_safetensors_header(path)
    assert rejected(validate(path), "corrupt safetensors header: not valid JSON")
    padded = ck.write_safetensors(tmp_path / "padded.safetensors")
    with padded.open("ab") as handle:
        handle.write(b"\0" * 8)
    assert rejected(validate(padded), "corrupt safetensors: 8 trailing bytes")


def test_nan_in_safetensors_is_rejected(tmp_path: Path, validate: Validator) -> None:
    tensors = {"a": torch.ones(10), "b": torch.ones(10).bfloat16()}
    tensors["b"][3] = math.nan
    path = ck.write_safetensors(tmp_path / "nan.safetensors", tensors)
    assert rejected(validate(path), "non-finite values in b (NaN)")


def test_misaligned_safetensors_are_read_correctly(tmp_path: Path, validate: Validator) -> None:
    odd = torch.ones(3).half()  # 6 bytes: the next tensor starts off its alignment
    weights = torch.arange(8, dtype=torch.float32)
    good = ck.write_safetensors_raw(tmp_path / "good.safetensors", [("odd", odd), ("w", weights)])
    assert validate(good).ok
    weights[5] = math.inf
    bad = ck.write_safetensors_raw(tmp_path / "bad.safetensors", [("odd", odd), ("w", weights)])
    assert rejected(validate(bad), "non-finite values in w (Inf)")


def test_safetensors_header_that_lies_is_rejected(tmp_path: Path, validate: Validator) -> None:
    tensors = [("a", torch.ones(3)), ("b", torch.ones(2))]
    wrong_shape = {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 12]}}
    path = ck.write_safetensors_raw(tmp_path / "shape.safetensors", tensors, header_edit=wrong_shape)
    assert rejected(validate(path), "corrupt safetensors header: a: 12 bytes for F32[4], which needs 16")
    overlap = {"b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}
    path = ck.write_safetensors_raw(tmp_path / "overlap.safetensors", tensors, header_edit=overlap)
    assert rejected(validate(path), "corrupt safetensors header: b starts at 4, expected 12")
    unknown = {"a": {"dtype": "F13", "shape": [3], "data_offsets": [0, 12]}}
    path = ck.write_safetensors_raw(tmp_path / "dtype.safetensors", tensors, header_edit=unknown)
    assert rejected(validate(path), "corrupt safetensors header: a: unsupported dtype 'F13'")


# --- hostile files --------------------------------------------------------------------


def test_the_hostile_pickle_really_runs_its_command(tmp_path: Path) -> None:
    """The fixture is only proof if unpickling it does run the command."""
    sentinel = tmp_path / "SENTINEL"
    path = ck.write_malicious_pickle(tmp_path / "evil.pt", sentinel)
    pickle.loads(path.read_bytes())
    assert sentinel.exists()


@pytest.mark.parametrize("kind", ["torch-zip", "torch-legacy", "hand-made-zip", "bare-pickle"])
def test_malicious_pickle_is_rejected_and_never_runs(tmp_path: Path, validate: Validator, kind: str) -> None:
    sentinel = tmp_path / "SENTINEL"
    path = tmp_path / "evil.pt"
    if kind == "hand-made-zip":
        ck.write_malicious_zip(path, sentinel)
    elif kind == "bare-pickle":
        ck.write_malicious_pickle(path, sentinel)
    else:
        ck.write_malicious_torch(path, sentinel, legacy=kind == "torch-legacy")
    verdict = validate(path)
    assert not verdict.ok
    if kind != "bare-pickle":
        assert verdict.reason == "unsafe global not allowed: posix.system", verdict.reason
    assert not sentinel.exists()
    # Even when the request allows other globals.
    assert not validate(path, allowed_globals=("pathlib.PosixPath",)).ok
    assert not sentinel.exists()


def test_extra_globals_only_when_allowed(tmp_path: Path, validate: Validator) -> None:
    obj = {"model": {"w": torch.ones(3)}, "config": {"data_dir": Path("/data/ljs")}}
    path = ck.write_torch(tmp_path / "c.pt", obj)
    assert rejected(validate(path), "unsafe global not allowed: pathlib.PosixPath")
    assert validate(path, allowed_globals=("pathlib.PosixPath",)).ok


def test_path_classes_pickled_by_python_3_13_are_the_same_allowed_global(
    tmp_path: Path, validate: Validator
) -> None:
    # Python 3.13 pickles PosixPath as pathlib._local.PosixPath: rewrite a file to say so.
    path = ck.write_torch(tmp_path / "c.pt", {"hyper_parameters": {"output_dir": Path("/logs/s1")}})
    with zipfile.ZipFile(path) as zf:
        records = {info.filename: zf.read(info) for info in zf.infolist()}
    (pkl,) = [name for name in records if name.endswith("/data.pkl")]
    assert b"pathlib\nPosixPath" in records[pkl]
    records[pkl] = records[pkl].replace(b"pathlib\nPosixPath", b"pathlib._local\nPosixPath")
    newer = tmp_path / "c313.pt"
    with zipfile.ZipFile(newer, "w", zipfile.ZIP_STORED) as zf:
        for name, data in records.items():
            zf.writestr(name, data)
    assert rejected(validate(newer), "unsafe global not allowed: pathlib._local.PosixPath")
    assert validate(newer, allowed_globals=("pathlib.PosixPath",)).ok
    assert not validate(newer, allowed_globals=("pathlib.PurePosixPath",)).ok


# --- identity of the file judged ------------------------------------------------------


def test_a_file_rewritten_in_place_or_replaced_gets_a_new_verdict(
    tmp_path: Path, validate: Validator
) -> None:
    path = ck.write_torch(tmp_path / "last.pt", step=10)
    first = validate(path, step_key="step")
    os.utime(path, ns=(first.version.mtime_ns - 10**9, first.version.mtime_ns - 10**9))
    ck.write_torch(tmp_path / "other.pt", ck.checkpoint(step=20, seed=1))
    path.write_bytes((tmp_path / "other.pt").read_bytes())  # same inode, new content
    second = validate(path, step_key="step")
    assert (first.step, second.step) == (10, 20)
    assert second.version.inode == first.version.inode
    assert second.version.mtime_ns != first.version.mtime_ns
    assert second.checksum != first.checksum
    replacement = ck.write_torch(tmp_path / "tmp.pt", ck.checkpoint(step=30, seed=2, step_as_tensor=True))
    os.replace(replacement, path)  # a new inode, as an atomic save does
    third = validate(path, step_key="step")
    assert third.step == 30
    assert third.version.inode != first.version.inode
    assert third.version.size == path.stat().st_size


# --- the worker process ---------------------------------------------------------------


def test_timeout_and_a_killed_worker_give_rejections_then_a_fresh_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = ck.write_torch(tmp_path / "good.pt")
    stall = ck.write_torch(tmp_path / "stall.pt")
    mark = tmp_path / "stalls"
    for name, value in stalling_env(stall, mark).items():
        monkeypatch.setenv(name, value)  # the worker, started with our environment, hangs on `stall`

    async def body() -> None:
        async with ValidatorClient(job_timeout_s=3.0) as client:
            await client.start()
            while not noted(mark, "ready"):  # torch imported: the 3 s are the job's alone
                await asyncio.sleep(0.02)
            verdict = await client.validate(ValidationRequest(str(stall)))
            assert noted(mark, "stalled") == 1, "the worker stalled on the file"
            assert rejected(verdict, "validation timed out after 3s")
            assert verdict.validator_error
            assert verdict.version.size == stall.stat().st_size
            assert pid_of(client) is None

            client.job_timeout_s = scaled(60.0)  # from here on the test kills the worker itself
            assert (await client.validate(ValidationRequest(str(good)))).ok
            first = pid_of(client)
            assert first is not None

            job = asyncio.create_task(client.validate(ValidationRequest(str(stall))))
            while noted(mark, "stalled") == 1:
                await asyncio.sleep(0.02)  # until the worker is inside the job
            assert any("stalling" in line for line in client.stderr_tail()), "its stderr reaches the client"
            os.kill(first, signal.SIGKILL)
            assert rejected(await job, "validator crashed (signal 9)")

            assert (await client.validate(ValidationRequest(str(good)))).ok
            second = pid_of(client)
            assert second is not None
            assert second != first
            assert not alive(first)

            os.kill(second, signal.SIGKILL)  # killed while idle: replaced before the next job
            wait_for(lambda: not alive(second), what="worker to die")
            assert (await client.validate(ValidationRequest(str(good)))).ok

    asyncio.run(body())


def test_concurrent_requests_queue_and_close_leaves_no_worker(tmp_path: Path) -> None:
    paths = [ck.write_torch(tmp_path / f"c_{i}.pt", step=i) for i in range(4)]

    async def body() -> int:
        client = ValidatorClient()
        verdicts = await asyncio.gather(
            *(client.validate(ValidationRequest(str(p), step_key="step")) for p in paths)
        )
        assert [v.step for v in verdicts] == [0, 1, 2, 3]
        assert all(v.ok for v in verdicts)
        pid = pid_of(client)
        assert pid is not None
        assert os.getpgid(pid) == pid  # its own process group
        await client.close()
        assert pid_of(client) is None
        return pid

    pid = asyncio.run(body())
    assert not alive(pid)


def test_idle_worker_is_stopped_and_restarted_on_demand(tmp_path: Path) -> None:
    path = ck.write_torch(tmp_path / "c.pt")

    async def body() -> None:
        async with ValidatorClient(idle_timeout_s=0.2) as client:
            assert (await client.validate(ValidationRequest(str(path)))).ok
            pid = pid_of(client)
            assert pid is not None
            deadline = asyncio.get_running_loop().time() + scaled(20)
            while (pid_of(client) is not None or alive(pid)) and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)  # the idle timer fires, the worker is stopped and reaped
            assert pid_of(client) is None
            assert not alive(pid)
            assert (await client.validate(ValidationRequest(str(path)))).ok

    asyncio.run(body())


def test_memory_limit_allows_a_mapped_file_bigger_than_it_and_stops_a_load_that_exceeds_it(
    tmp_path: Path,
) -> None:
    limit_mb = 400  # torch's own baseline is ~250 MB of private memory
    big_zip = ck.write_big_torch(tmp_path / "big.pt", 480)
    assert big_zip.stat().st_size > limit_mb << 20

    async def body() -> tuple[Verdict, Verdict]:
        async with ValidatorClient(memory_limit_mb=limit_mb, job_timeout_s=scaled(60)) as client:
            mapped = await client.validate(ValidationRequest(str(big_zip)))
            big_zip.unlink()
            big_legacy = ck.write_big_torch(tmp_path / "big_legacy.pt", 480, legacy=True)
            loaded = await client.validate(ValidationRequest(str(big_legacy)))
            return mapped, loaded

    mapped, loaded = asyncio.run(body())
    assert mapped.ok, mapped
    assert not loaded.ok
    assert loaded.reason == f"validator ran out of memory (limit {limit_mb} MB)"
    assert loaded.validator_error, "running out of memory says nothing about the file: not a rejection"


def test_one_shot_command_prints_a_verdict(tmp_path: Path) -> None:
    path = ck.write_torch(tmp_path / "c.pt", step=7)
    command = [sys.executable, "-m", "supervisor.validator.worker.serve", str(path), "--step-key", "step"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=scaled(60), check=False)
    assert done.returncode == 0, done.stderr
    verdict = Verdict.from_json(json.loads(done.stdout))
    assert verdict.ok
    assert verdict.step == 7
    bad = subprocess.run(
        [*command[:3], str(tmp_path / "nope.pt")], capture_output=True, timeout=scaled(60), check=False
    )
    assert bad.returncode == 1


def test_the_daemon_side_never_imports_torch() -> None:
    code = "import sys, supervisor.validator.client; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=scaled(60), check=False).returncode == 0


# --- pieces ---------------------------------------------------------------------------


def test_crc32_combine_matches_zlib() -> None:
    a, b = os.urandom(1000), os.urandom(123457)
    assert crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)
    assert crc32_combine(0, zlib.crc32(b), len(b)) == zlib.crc32(b)
    assert crc32_combine(zlib.crc32(a), 0, 0) == zlib.crc32(a)


def test_lookup_prefers_nested_dicts_and_accepts_dotted_keys() -> None:
    obj = {"model": {"enc.weight": 1}, "a": {"b": 2}, "a.b": 3, "x.y": 4}
    assert lookup(obj, "model.enc.weight") == (True, 1)
    assert lookup(obj, "a.b") == (True, 2)
    assert lookup(obj, "x.y") == (True, 4)
    assert lookup(obj, "a") == (True, {"b": 2})
    assert lookup(obj, "model.enc") == (False, None)


def test_verdict_round_trips_through_json() -> None:
    verdict = Verdict(
        "p", False, "x", 1, 2, FileVersion(3, 4, 5, 6), "abcd", "torch-zip", 0.5, ("note",), True
    )
    flat = verdict.to_json()
    assert (flat["size"], flat["mtime_ns"], flat["inode"], flat["ctime_ns"]) == (
        3,
        4,
        5,
        6,
    )  # what verify --json prints
    assert Verdict.from_json(json.loads(json.dumps(flat))) == verdict


def test_start_warms_the_worker_up_before_the_first_job(tmp_path: Path) -> None:
    async def body() -> None:
        client = ValidatorClient(idle_timeout_s=None)
        assert client.pid is None
        await client.start()
        pid = client.pid
        assert pid is not None
        assert alive(pid)
        verdict = await client.validate(ValidationRequest(path=str(ck.write_torch(tmp_path / "a.pt"))))
        assert verdict.ok
        assert client.pid == pid, "the warmed-up worker did the job"
        await client.close()
        wait_for(lambda: not alive(pid), what="the worker to exit")

    asyncio.run(body())


def test_a_counter_may_live_under_either_of_two_keys(tmp_path: Path, validate: Validator) -> None:
    new = ck.write_torch(tmp_path / "model_40.pt", {"w": torch.ones(2), "update": 40})
    old = ck.write_torch(tmp_path / "model_30.pt", {"w": torch.ones(2), "step": 30})
    for path, step in ((new, 40), (old, 30)):
        verdict = validate(path, step_key="update|step", expected_step=step)
        assert verdict.ok, verdict.reason
        assert verdict.step == step
    neither = ck.write_torch(tmp_path / "model_20.pt", {"w": torch.ones(2)})
    assert rejected(validate(neither, step_key="update|step"), "missing key: update|step")


def test_a_file_rewritten_while_it_is_read_has_no_verdict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The trainer rewrites the file in place (truncating open, new bytes) after the worker
    opened it: whatever the read found, it is `changed`, neither ok nor rejected."""
    from supervisor.validator.worker import checks as validator_worker

    path = tmp_path / "model_last.pt"
    torch.save({"update": 5, "w": torch.ones(64)}, path)
    judge = validator_worker._judge

    def rewritten_meanwhile(job: Any, memory: Any) -> None:
        torch.save({"update": 10, "w": torch.ones(4096)}, path)  # the same inode, rewritten
        judge(job, memory)

    monkeypatch.setattr(validator_worker, "_judge", rewritten_meanwhile)
    verdict = validator_worker.validate(ValidationRequest(path=str(path)))
    assert verdict.changed
    assert not verdict.ok
    assert not verdict.validator_error
    assert "changed while it was read" in (verdict.reason or "")
    monkeypatch.setattr(validator_worker, "_judge", judge)
    assert validator_worker.validate(ValidationRequest(path=str(path))).ok  # once quiet: judged
