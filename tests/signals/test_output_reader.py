"""The detectors: trainers' real output lines, heartbeats and TensorBoard steps -> events."""

from __future__ import annotations

import math

import pytest

import trainer_adapters
from supervisor.core import Event, Progress, TrainerSaid
from supervisor.signals.output_reader import OutputReader, heartbeat_progress, metrics_progress, said
from trainer_adapters.base import Said


def read(adapter: str, *lines: str, attempt: int = 1) -> list[Event]:
    got: list[Event] = []
    found = trainer_adapters.get(adapter)
    reader = OutputReader(found.lines, found.position_unit, lambda: attempt, got.append)
    for line in lines:
        reader("stdout", line)
    return got


def progress(events: list[Event]) -> list[tuple[int | None, bool | None]]:
    return [(e.position, e.nonfinite) for e in events if isinstance(e, Progress)]


def test_vits_epoch_lines_give_the_position_and_its_loss_lists_the_nan() -> None:
    lines = (
        "INFO:ljs:Train Epoch: 3 [40%]",
        "INFO:ljs:[2.61, 2.33, 1.16, 104.9, 0.23, 0.46, 45, 0.0002]",
        "INFO:ljs:[nan, nan, nan, nan, nan, nan, 50, 0.0002]",
    )
    # VITS's states count epochs (its names' global steps are renumbered on resume): the
    # epoch line is the position; the loss lists (global steps) carry the losses only.
    assert progress(read("vits", *lines)) == [(3, None), (None, False), (None, True)]


def test_gpt_sovits_s2_counts_epochs_and_its_loss_lines_carry_none() -> None:
    lines = (
        "INFO:exp:Train Epoch: 7 [33%]",
        "INFO:exp:[2.1, 2.3, 1.1, 18.9, 0.2, 1.4, 1200, 9.9e-05]",
        "INFO:exp:[nan, 2.3, 1.1, 18.9, 0.2, 1.4, 1300, 9.9e-05]",
    )
    assert progress(read("gpt-sovits-s2", *lines)) == [(7, None), (None, False), (None, True)]


def test_f5_tts_progress_bar_redraws_count_once_and_nan_is_read() -> None:
    bar = "Epoch 1/11:  20%|██        | 2/10 [00:00<00:00, 6442.86update/s, loss={}, update={}]"
    events = read("f5-tts", bar.format("0.712", 6), bar.format("0.712", 6), bar.format("nan", 7))
    assert progress(events) == [(6, False), (7, True)]


def test_lightning_nan_dot_zero_and_seed_vc_lines() -> None:
    s1 = "Epoch 3:  41%|████      | 41/100 [00:10<00:14, 4.1it/s, v_num=0, total_loss_step=nan.0]"
    assert progress(read("gpt-sovits-s1", s1)) == [(None, True)]
    v1 = ("epoch 0, step 200, loss: 0.8123", "epoch 0, step 300, loss: nan")
    assert progress(read("seed-vc", *v1)) == [(200, False), (300, True)]


@pytest.mark.parametrize(
    "line",
    [
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.17 GiB.",
        "torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB",
        "RuntimeError: CUDA error: out of memory",
        "RuntimeError: CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
        "torch.OutOfMemoryError: HIP out of memory. Tried to allocate 2.00 GiB",
    ],
)
def test_out_of_memory_errors_are_read_for_every_trainer(line: str) -> None:
    for adapter in trainer_adapters.names():
        (event,) = read(adapter, line)
        assert isinstance(event, TrainerSaid)
        assert event.said is Said.OOM
    assert said((), "RuntimeError: DataLoader worker (pid 4242) is killed by signal: Killed.", 1) == []


def test_heartbeat_steps_are_positions_only_where_checkpoints_count_steps() -> None:
    assert heartbeat_progress(2, 500, 0.5, "step") == Progress(
        2, "heartbeat", 500, False, "heartbeat step=500 loss=0.5"
    )
    assert heartbeat_progress(2, 500, math.inf, "epoch").position is None
    assert heartbeat_progress(2, 500, math.inf, "epoch").nonfinite is True
    assert heartbeat_progress(2, None, None, "step").nonfinite is None


def test_a_tensorboard_step_is_bad_when_any_loss_is_not_finite() -> None:
    good = metrics_progress(1, 50, [("loss_avg_50/g/total", 31.2), ("loss_avg_50/d/adv", 2.4)])
    bad = metrics_progress(1, 100, [("loss_avg_50/g/total", math.nan), ("loss_avg_50/d/adv", 2.4)])
    assert (good.nonfinite, bad.nonfinite) == (False, True)
    assert "loss_avg_50/g/total" in bad.line
    assert good.position is None
