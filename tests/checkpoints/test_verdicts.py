"""CheckpointBook with a real validator worker and real files."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import torch

from supervisor.checkpoints.on_disk import OnDisk, stat_checkpoint
from supervisor.checkpoints.verdicts import CheckpointBook, Unsettled
from supervisor.ledger import Ledger
from supervisor.validator.client import ValidatorClient
from tests.support import ckpt_factory as ck
from tests.support.procs import wait_for
from tests.support.twins import run_cli, write_config
from trainer_adapters.base import Layout
from trainer_adapters.f5_tts import F5Layout, F5Options
from trainer_adapters.generic import GenericLayout, GenericOptions

LAYOUT = GenericLayout(GenericOptions(pattern="ckpt_{step}.pt", step_key="step"))


def _book(
    tmp_path: Path,
    layout: Layout,
    ckpt_dir: Path,
    ledger: Ledger,
    client: ValidatorClient,
    *,
    accept_model_change: bool = False,
) -> CheckpointBook:
    return CheckpointBook(
        layout=layout,
        directories=[ckpt_dir],
        state_dir=tmp_path / "state",
        ledger=ledger,
        validator=client,
        keep_verified=0,
        accept_model_change=accept_model_change,
    )


def test_a_verified_file_changed_in_place_with_its_mtime_restored_is_verified_again(tmp_path: Path) -> None:
    ckpt_dir = tmp_path / "ckpt"
    ckpt_dir.mkdir()
    path = ck.write_torch(ckpt_dir / "ckpt_20.pt", step=20)

    async def body() -> tuple[bool, bool, bool]:
        ledger = Ledger.open(tmp_path / "state")
        client = ValidatorClient(idle_timeout_s=None)
        book = _book(tmp_path, LAYOUT, ckpt_dir, ledger, client)
        try:
            first = await book.verify(_on_disk(path))
            before = path.stat()
            ck.flip_bit_in_tensor_data(path)  # same size; then the mtime is put back
            os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
            after = path.stat()
            same_mtime = (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
            second = await book.verify(_on_disk(path))
        finally:
            await client.close()
            ledger.close()
        assert first is not None
        assert second is not None
        return first.ok, same_mtime, second.ok

    first_ok, same_mtime, second_ok = asyncio.run(body())
    assert first_ok
    assert same_mtime, "the test really restored size and mtime"
    assert not second_ok, "the changed file was judged again, not taken from the ledger"


def _on_disk(path: Path) -> OnDisk:
    on_disk = stat_checkpoint(LAYOUT, path)
    assert on_disk is not None
    return on_disk


# --- the model's shapes: one reference per role, the newest-written verified file --------------

F5 = F5Layout(F5Options())


def _f5_file(path: Path, *, width: int, update: int, mtime_s: int) -> Path:
    model = {"proj.weight": torch.zeros(width, 2), "proj.bias": torch.zeros(width)}
    state = {
        "model_state_dict": model,
        "optimizer_state_dict": {"state": {}, "param_groups": []},
        "ema_model_state_dict": model,
        "scheduler_state_dict": {},
        "update": update,
    }
    torch.save(state, path)
    os.utime(path, (mtime_s, mtime_s))
    return path


def _judge(tmp_path: Path, ckpt_dir: Path, *, accept: bool, paths: list[Path] | None) -> dict[str, bool]:
    """Verdicts (name -> ok) from one book: of `paths` in this order, or of verify_all."""

    async def body() -> dict[str, bool]:
        ledger = Ledger.open(tmp_path / "state")
        client = ValidatorClient(idle_timeout_s=None)
        book = _book(tmp_path, F5, ckpt_dir, ledger, client, accept_model_change=accept)
        try:
            if paths is None:
                rows = await book.verify_all()
            else:
                rows = [await book.verify(on_disk) for p in paths if (on_disk := stat_checkpoint(F5, p))]
        finally:
            await client.close()
            ledger.close()
        return {Path(r.path).name: r.ok for r in rows if r is not None}

    return asyncio.run(body())


def test_at_a_cold_start_the_newest_written_file_sets_the_models_shapes(tmp_path: Path) -> None:
    # A file of another model copied in with its old mtime kept (cp -p): whatever order
    # the directory lists them in, it is the one judged against the run's newest file.
    ckpt_dir = tmp_path / "ckpts"
    ckpt_dir.mkdir()
    _f5_file(ckpt_dir / "model_900.pt", width=3, update=900, mtime_s=1_000)  # foreign, oldest
    _f5_file(ckpt_dir / "model_100.pt", width=2, update=100, mtime_s=2_000)
    _f5_file(ckpt_dir / "model_200.pt", width=2, update=200, mtime_s=3_000)
    verdicts = _judge(tmp_path, ckpt_dir, accept=False, paths=None)
    assert verdicts == {"model_200.pt": True, "model_100.pt": True, "model_900.pt": False}


def test_at_a_cold_start_the_order_files_are_judged_in_changes_nothing(tmp_path: Path) -> None:
    # The watcher reports files in directory order, the oldest maybe first: the newest
    # written still sets the shapes.
    ckpt_dir = tmp_path / "ckpts"
    ckpt_dir.mkdir()
    oldest = _f5_file(ckpt_dir / "model_100.pt", width=2, update=100, mtime_s=1_000)
    middle = _f5_file(ckpt_dir / "model_200.pt", width=2, update=200, mtime_s=2_000)
    newest = _f5_file(ckpt_dir / "model_300.pt", width=3, update=300, mtime_s=3_000)
    verdicts = _judge(tmp_path, ckpt_dir, accept=False, paths=[oldest, middle, newest])
    assert verdicts == {"model_100.pt": False, "model_200.pt": False, "model_300.pt": True}


def test_an_older_file_accepted_later_never_becomes_the_reference(tmp_path: Path) -> None:
    ckpt_dir = tmp_path / "ckpts"
    ckpt_dir.mkdir()
    old_model = _f5_file(ckpt_dir / "model_100.pt", width=2, update=100, mtime_s=1_000)
    assert _judge(tmp_path, ckpt_dir, accept=False, paths=[old_model]) == {"model_100.pt": True}
    changed = _f5_file(ckpt_dir / "model_200.pt", width=3, update=200, mtime_s=2_000)
    assert _judge(tmp_path, ckpt_dir, accept=False, paths=[changed]) == {"model_200.pt": False}
    # Changed on purpose: the file rejected for its shapes is judged again, and accepted.
    # An older file of the old model, first seen now, is accepted too, but the model the
    # trainer now builds is still the changed one.
    assert _judge(tmp_path, ckpt_dir, accept=True, paths=[changed]) == {"model_200.pt": True}
    older = _f5_file(ckpt_dir / "model_50.pt", width=2, update=50, mtime_s=500)
    assert _judge(tmp_path, ckpt_dir, accept=True, paths=[older]) == {"model_50.pt": True}
    # Without the flag again: a new file of the changed model is the run's model.
    landed = _f5_file(ckpt_dir / "model_300.pt", width=3, update=300, mtime_s=3_000)
    assert _judge(tmp_path, ckpt_dir, accept=False, paths=[landed]) == {"model_300.pt": True}
    stray = _f5_file(ckpt_dir / "model_400.pt", width=2, update=400, mtime_s=4_000)
    assert _judge(tmp_path, ckpt_dir, accept=False, paths=[stray]) == {"model_400.pt": False}


def test_the_daemon_and_plan_take_the_same_newest_file_as_the_models_shapes(tmp_path: Path) -> None:
    """A cold start on model_1000/2000 of one shape and a newer model_3000 of another (the
    model changed on purpose): the daemon judges what is there as `plan --apply` does,
    newest first, whatever order its watcher would have listed the files in."""
    left = {}
    for way in ("plan", "run"):
        base = tmp_path / way
        ckpt_dir = base / "ckpts" / "x"
        ckpt_dir.mkdir(parents=True)
        for n, (update, width) in enumerate([(1000, 2), (2000, 2), (3000, 3)]):
            _f5_file(ckpt_dir / f"model_{update}.pt", width=width, update=update, mtime_s=1_000 + 10 * n)
        config = write_config(
            base,
            adapter="f5-tts",
            command=[sys.executable, "-c", "pass"],
            cwd=base,
            checkpoint_dir=ckpt_dir,
            checkpoints={"quiet_s": 0.05, "keep_verified": 0},
            more={"heartbeat": {"mode": "off"}},
        )
        args = ["plan", "-c", str(config), "--apply"] if way == "plan" else ["run", "-c", str(config)]
        result = run_cli(*args)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr
        left[way] = sorted(p.name for p in ckpt_dir.iterdir())
    assert left["plan"] == left["run"] == ["model_3000.pt"]


def test_a_newer_file_still_being_written_is_not_judged_ahead_of_one_that_landed(tmp_path: Path) -> None:
    """With no model shapes known yet, the newest file is judged first. During a run a
    newer file that a process still writes (half a zip so far) has no verdict: nothing
    about it is recorded, and the older file that landed is verified."""
    import subprocess

    from supervisor.checkpoints.verdicts import Unsettled

    ckpt_dir = tmp_path / "ckpt"
    ckpt_dir.mkdir()
    landed = ck.write_torch(ckpt_dir / "ckpt_20.pt", step=20)
    os.utime(landed, (1_000, 1_000))
    whole = ck.write_torch(tmp_path / "whole.pt", step=30).read_bytes()
    writing = ckpt_dir / "ckpt_30.pt"
    writing.write_bytes(whole[: len(whole) // 2])
    ready = tmp_path / "ready"
    code = (
        "import pathlib, sys, time\n"
        "fh = open(sys.argv[1], 'ab')\n"
        "pathlib.Path(sys.argv[2]).write_text('ready')\n"
        "time.sleep(600)\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", code, str(writing), str(ready)])

    async def body() -> tuple[object, object, object]:
        ledger = Ledger.open(tmp_path / "state")
        client = ValidatorClient(idle_timeout_s=None)
        book = _book(tmp_path, LAYOUT, ckpt_dir, ledger, client)
        try:
            first = await book.verify_landed(_on_disk(landed), 1)
            newer = book.known(_on_disk(writing))
            caught = await book.verify_landed(_on_disk(writing), 1)
        finally:
            await client.close()
            ledger.close()
        return first, newer, caught

    try:
        wait_for(ready.exists, what="the writer to open the file")
        first, newer, caught = asyncio.run(body())
    finally:
        writer.kill()
        writer.wait()
    assert getattr(first, "ok", None) is True
    assert newer is None, "nothing recorded about the file being written"
    assert isinstance(caught, Unsettled)
    assert "open for writing" in caught.reason


class _FinishedWhileReading(ValidatorClient):
    """The real validator; and, while its verdict is on its way (a busy machine), the
    writer finishes the file and closes it, so no process has it open any more."""

    def __init__(self, path: Path, whole: bytes) -> None:
        super().__init__(idle_timeout_s=None)
        self.path, self.whole = path, whole

    async def validate(self, request):  # type: ignore[no-untyped-def]
        verdict = await super().validate(request)
        self.path.write_bytes(self.whole)  # the rest of the write, then closed
        return verdict


def test_a_torn_read_of_a_file_finished_right_after_is_no_rejection(tmp_path: Path) -> None:
    ckpt_dir = tmp_path / "ckpt"
    ckpt_dir.mkdir()
    whole = ck.write_torch(tmp_path / "whole.pt", step=30).read_bytes()
    writing = ckpt_dir / "ckpt_30.pt"
    writing.write_bytes(whole[: len(whole) // 2])

    async def body() -> tuple[object, object, object]:
        ledger = Ledger.open(tmp_path / "state")
        client = _FinishedWhileReading(writing, whole)
        book = _book(tmp_path, LAYOUT, ckpt_dir, ledger, client)
        try:
            caught = await book.verify_landed(_on_disk(writing), 1)
            recorded = book.known(_on_disk(writing))
            later = await book.verify_landed(_on_disk(writing), 1)
        finally:
            await client.close()
            ledger.close()
        return caught, recorded, later

    caught, recorded, later = asyncio.run(body())
    assert isinstance(caught, Unsettled), caught
    assert "written again after it was read" in caught.reason
    assert recorded is None, "nothing recorded about the version caught mid-write"
    assert getattr(later, "ok", None) is True, "the finished file is verified when read again"
