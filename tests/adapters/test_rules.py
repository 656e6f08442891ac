"""The adapters' shared pure helpers: sort keys, name patterns, line readings, flags."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from supervisor.core import Progress, TrainerSaid
from supervisor.process.trainer_log import OutputSink, RotatingLog
from supervisor.signals.output_reader import OutputReader, said
from trainer_adapters.base import ArgRule, LineRule, NamedCheckpoint, RuleFails, Said
from trainer_adapters.rules import (
    NamePattern,
    all_digits,
    arg_problems,
    flag_value,
    ignored_by,
    max_by,
    number,
    parse_by,
    read_line,
)


def ckpt(path: str, role: str = "G", step: int | None = None) -> NamedCheckpoint:
    return NamedCheckpoint(Path(path), role, step)


@pytest.mark.parametrize(
    ("text", "value"),
    [("logs/m/G_1000.pth", 1000), ("logs/exp2/G_10.pth", 210), ("G_best.pth", None), ("", None)],
)
def test_all_digits_is_the_trainers_int_of_every_digit(text: str, value: int | None) -> None:
    assert all_digits(text) == value


def test_max_by_takes_the_largest_key_and_fails_like_the_trainer_on_a_digitless_name() -> None:
    files = [ckpt("/r/G_900.pth"), ckpt("/r/G_1000.pth"), ckpt("/r/G_233333333333.pth")]
    best = max_by(files, lambda f: all_digits(f.path.name), "x")
    assert best is not None
    assert best.path.name == "G_233333333333.pth"
    assert max_by([], lambda f: 1, "x") is None
    with pytest.raises(RuleFails) as failed:
        max_by([*files, ckpt("/r/G_best.pth")], lambda f: all_digits(f.path.name), "int('') raises")
    assert [f.path.name for f in failed.value.culprits] == ["G_best.pth"]
    assert failed.value.why == "int('') raises"


def test_ties_go_to_the_later_path() -> None:
    files = [ckpt("/r/G_010.pth"), ckpt("/r/G_10.pth")]
    best = max_by(files, lambda f: all_digits(f.path.name), "x")
    assert best is not None
    assert best.path.name == "G_10.pth"


def test_name_patterns_read_role_step_and_epoch() -> None:
    patterns = (
        NamePattern(r"model_last\.pt", in_place=True),
        NamePattern(r"(?P<role>CFM|AR)_epoch_(?P<epoch>\d+)_step_(?P<step>\d+)\.pth"),
        NamePattern(r"G_(?P<step>\d+)\.pth", role="G", content_step=True),
    )
    last = parse_by(patterns, Path("/c/model_last.pt"))
    assert last == NamedCheckpoint(Path("/c/model_last.pt"), "model", None, in_place=True)
    cfm = parse_by(patterns, Path("/c/CFM_epoch_00002_step_00500.pth"))
    assert cfm is not None
    assert (cfm.role, cfm.step, cfm.epoch) == ("CFM", 500, 2)
    g = parse_by(patterns, Path("/c/G_40.pth"))
    assert g is not None
    assert (g.step, g.content_step) == (None, True)
    assert parse_by(patterns, Path("/c/model_last.pt.bak")) is None


def test_ignored_names_say_what_they_are() -> None:
    kinds = ((r"pretrained_.+\.(pt|safetensors)", "pretrained weights"),)
    assert ignored_by(kinds, Path("ckpts/x/pretrained_model_1200000.pt")) == "pretrained weights"
    assert ignored_by(kinds, Path("ckpts/x/model_1.pt")) is None


@pytest.mark.parametrize(
    ("text", "finite", "value"),
    [
        ("0.712", True, 0.712),
        ("3.67e+3", True, 3670.0),
        ("1e-05", True, 1e-05),
        ("nan", False, None),
        ("nan.0", False, None),
        ("inf.0", False, math.inf),
        ("-inf.", False, -math.inf),
        ("-inf", False, -math.inf),
        ("Infinity", False, math.inf),
    ],
)
def test_numbers_as_trainers_print_them(text: str, finite: bool, value: float | None) -> None:
    got = number(text)
    assert got is not None
    assert math.isfinite(got) is finite
    if value is not None:
        assert got == value


def test_words_are_not_numbers() -> None:
    assert number("info") is None
    assert number("nanny") is None
    assert number("") is None


LOSS_LIST = r"\[(?P<losses>[^\]]*?), (?P<step>\d+), (?P<lr>[^,\]]+)\]$"


def test_a_loss_list_line_gives_its_losses_and_step() -> None:
    rules = (LineRule(Said.LOSS, LOSS_LIST),)
    (reading,) = read_line(rules, "INFO:ljs:[2.61, 2.13, 5.9, 21.7, 1.38, 1.52, 4200, 0.00019995]")
    assert reading.losses == (2.61, 2.13, 5.9, 21.7, 1.38, 1.52)
    assert (reading.step, reading.nonfinite) == (4200, False)
    (bad,) = read_line(rules, "INFO:ljs:[nan, 2.13, inf, 21.7, 1.38, 1.52, 4400, 0.0002]")
    assert bad.nonfinite
    assert bad.step == 4400
    assert read_line(rules, "INFO:ljs:Train Epoch: 3 [42%]") == []


def test_a_single_loss_group_and_several_rules_on_one_line() -> None:
    rules = (
        LineRule(Said.LOSS, r"loss=(?P<loss>[^,\]]+)"),
        LineRule(Said.PROGRESS, r"(?:update|step)=(?P<step>\d+)"),
    )
    line = "Epoch 1/11:  20%|██        | 2/10 [00:00<00:00, 6442.86update/s, loss=nan, update=6]"
    loss, progress = read_line(rules, line)
    assert loss.said is Said.LOSS
    assert loss.nonfinite
    assert progress.step == 6


def test_only_decisive_lines_become_events() -> None:
    rules = (
        LineRule(Said.FATAL, r"CPU training is not allowed", "it needs a GPU"),
        LineRule(Said.PROGRESS, r"step (?P<step>\d+)"),
        LineRule(Said.LOADED, r"Loaded checkpoint '(?P<path>[^']+)'"),
    )
    (event,) = said(rules, "AssertionError: CPU training is not allowed.", attempt=3)
    assert (event.attempt, event.said, event.explain) == (3, "fatal", "it needs a GPU")
    assert said(rules, "step 40", attempt=3) == []
    got: list[object] = []
    reader = OutputReader(rules, "step", lambda: 7, got.append)
    reader("stdout", "Loaded checkpoint 'logs/m/G_10.pth' (iteration 1)")
    reader("stdout", "step 50")
    assert got[0] == TrainerSaid(7, Said.LOADED, "Loaded checkpoint 'logs/m/G_10.pth' (iteration 1)")
    assert got[1] == Progress(7, "output", 50, None, "step 50")


def test_arg_rules_see_flags_in_both_styles_and_false_booleans() -> None:
    rules = (ArgRule(("--cleanup",), "would delete every checkpoint"),)
    assert arg_problems(rules, ["python", "core.py", "train", "--cleanup"]) == [
        "would delete every checkpoint"
    ]
    assert arg_problems(rules, ["core.py", "--cleanup", "True"]) == ["would delete every checkpoint"]
    assert arg_problems(rules, ["core.py", "--cleanup", "False"]) == []
    assert arg_problems(rules, ["core.py", "--cleanup=false"]) == []
    assert arg_problems(rules, ["core.py", "--cleanup=1"]) == ["would delete every checkpoint"]
    assert arg_problems(rules, ["core.py", "--cleanupx"]) == []
    valued = (ArgRule(("--pretrained-ckpt",), "ignores the run directory", boolean=False),)
    assert arg_problems(valued, ["train.py", "--pretrained-ckpt", "no"]) == ["ignores the run directory"]


def test_flag_value() -> None:
    assert flag_value(["train.py", "-c", "x.json", "-m", "ljs"], "-m", "--model") == "ljs"
    assert flag_value(["train.py", "--model=vctk"], "-m", "--model") == "vctk"
    assert flag_value(["train.py", "-m"], "-m") is None


def test_a_failing_line_handler_never_stops_the_others_or_the_log(tmp_path: Path) -> None:
    seen: list[str] = []

    def broken(stream: str, line: str) -> None:
        raise ValueError("bad handler")

    log = RotatingLog(tmp_path / "t.log", 10_000, 1)
    sink = OutputSink(log, [broken, lambda stream, line: seen.append(line)])
    sink.write("stdout", b"one\ntwo\nthr")
    sink.forget_partial_lines()  # a new attempt: the fragment "thr" is not its first line
    sink.write("stdout", b"ee\n")
    log.close()
    assert seen == ["one", "two", "ee"]
    assert (tmp_path / "t.log").read_bytes() == b"one\ntwo\nthree\n"


def test_advancing_lines_are_progress_and_redraws_are_not() -> None:
    rules = (
        LineRule(Said.FATAL, r"file write failed", "the disk is full"),
        LineRule(Said.PROGRESS, r"step (?P<step>\d+)"),
    )
    got: list[object] = []
    attempt = [1]
    reader = OutputReader(rules, "step", lambda: attempt[0], got.append)
    reader("stdout", "step 10")
    reader("stdout", "saving ckpt exp_e3:RuntimeError: PytorchStreamWriter ... file write failed")
    reader("stdout", "step 20")
    reader("stderr", "step 20")  # the same bar drawn again
    assert [type(e).__name__ for e in got] == ["Progress", "TrainerSaid", "Progress"]
    assert [e.position for e in got if isinstance(e, Progress)] == [10, 20]
    attempt[0] = 2  # the next attempt starts its own count
    reader("stdout", "step 20")
    assert got[-1] == Progress(2, "output", 20, None, "step 20")
