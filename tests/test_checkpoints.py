"""CheckpointBook with a real validator worker and real files."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from supervisor.checkpoints import CheckpointBook, OnDisk, stat_checkpoint
from supervisor.ledger import Ledger
from supervisor.validation import ValidatorClient
from tests import ckpt_factory as ck
from trainer_adapters.generic import GenericLayout, GenericOptions

LAYOUT = GenericLayout(GenericOptions(pattern="ckpt_{step}.pt", step_key="step"))


def test_a_verified_file_changed_in_place_with_its_mtime_restored_is_verified_again(tmp_path: Path) -> None:
    ckpt_dir = tmp_path / "ckpt"
    ckpt_dir.mkdir()
    path = ck.write_torch(ckpt_dir / "ckpt_20.pt", step=20)

    async def body() -> tuple[bool, bool, bool]:
        ledger = Ledger.open(tmp_path / "state")
        client = ValidatorClient(idle_timeout_s=None)
        book = CheckpointBook(
            layout=LAYOUT,
            directories=[ckpt_dir],
            state_dir=tmp_path / "state",
            ledger=ledger,
            validator=client,
            keep_verified=0,
        )
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
