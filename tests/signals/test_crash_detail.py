"""The crash detail names the exception of the last traceback, on the output of real
processes: Hydra's closing hint, a launcher's re-raise and tqdm's escape codes around it."""

from __future__ import annotations

import subprocess
import sys

from supervisor.signals.crash_detail import crash_detail, plain
from tests.support.load import scaled

HYDRA_LIKE = """
import sys, traceback
print("Epoch 3/12:  25%|##| 2/8 [00:00<00:00, loss=2.65, update=30]\\x1b[A", end="", file=sys.stderr)
try:
    raise RuntimeError("PytorchStreamReader failed reading zip archive: failed finding central directory")
except RuntimeError:
    sys.stderr.write("Error executing job with overrides: []\\n")
    traceback.print_exc()
    sys.stderr.write("\\nSet the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace.\\n")
"""

LAUNCHER_LIKE = """
import subprocess, sys, traceback
try:
    raise ValueError("size mismatch for transformer.proj: copying a param")
except ValueError:
    traceback.print_exc()
raise subprocess.CalledProcessError(1, ["python", "train.py"])
"""


def lines_of(code: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=scaled(120), check=False
    )
    return (done.stdout + done.stderr).replace("\r", "\n").splitlines()


def test_the_exception_of_the_last_traceback_not_hydras_hint() -> None:
    detail = crash_detail(lines_of(HYDRA_LIKE))
    assert detail == (
        "error: RuntimeError: PytorchStreamReader failed reading zip archive: failed finding central directory"
    )


def test_a_launchers_re_raise_gives_way_to_the_childs_error() -> None:
    detail = crash_detail(lines_of(LAUNCHER_LIKE))
    assert detail == "error: ValueError: size mismatch for transformer.proj: copying a param"


def test_without_a_traceback_the_last_line_that_starts_a_message() -> None:
    warning = [
        "loss=2.1 update=40]\x1b[A",
        "/x/dataloader.py:1102: UserWarning: 'pin_memory' argument is set as true",
        "  warnings.warn(warn_msg)",
    ]
    assert (
        crash_detail(warning)
        == "last output: /x/dataloader.py:1102: UserWarning: 'pin_memory' argument is set as true"
    )
    assert crash_detail([]) == ""


def test_plain_takes_out_escape_sequences_and_control_characters() -> None:
    assert plain("update=30]\x1b[A") == "update=30]"
    assert plain("\x1b[31mred\x1b[0m \x1b]0;title\x07done\x07") == "red done"


def test_rank_prefixes_and_a_traceback_longer_than_the_tail() -> None:
    ranked = [f"[rank0]: {line}" for line in lines_of(LAUNCHER_LIKE) if "CalledProcessError" not in line]
    assert crash_detail(ranked) == "error: ValueError: size mismatch for transformer.proj: copying a param"
    # The header went out of the tail: the last exception line still names the cause.
    cut = lines_of(HYDRA_LIKE)
    header = next(i for i, line in enumerate(cut) if "Traceback" in line)
    assert crash_detail(cut[header + 1 :]).startswith("error: RuntimeError: PytorchStreamReader failed")


def test_an_error_line_long_survived_is_not_the_cause() -> None:
    survived = ["ValueError: skipping a bad sample", *[f"step {n}" for n in range(30)]]
    assert crash_detail(survived) == "last output: step 29"
