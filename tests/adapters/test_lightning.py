"""GPT-SoVITS s1's resume on the real PyTorch Lightning installed here. With 2.6 or later
(pinned in requirements-dev.txt) it loads checkpoints weights-only, and they hold a
pathlib path: the plan refuses to promise a resume the unmodified trainer cannot load;
with [checkpoints] trainer_safe_globals the supervisor allows exactly that class inside
the trainer's process, and the trainer resumes. Before 2.6 Lightning asks torch for a
full unpickle: the same files resume without the shim. `make test` runs this file again
on Lightning 2.5.6 (LIGHTNING_EXPECTED says which version must be the one found)."""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.load import scaled
from tests.support.twins import CLI, TRAINERS, run_cli, status, trainer_output, write_config

LIGHTNING = importlib.metadata.version("pytorch-lightning")
WEIGHTS_ONLY = tuple(map(int, LIGHTNING.split(".")[:2])) >= (2, 6)
SCRIPT = TRAINERS / "lightning_s1.py"
OUT = "logs/exp/logs_s1_v2Pro"
pytestmark = pytest.mark.timeout(300)
from_2_6 = pytest.mark.skipif(not WEIGHTS_ONLY, reason=f"needs Lightning >= 2.6 (found {LIGHTNING})")
before_2_6 = pytest.mark.skipif(
    WEIGHTS_ONLY, reason=f"needs Lightning < 2.6 (found {LIGHTNING}): make test runs it again on 2.5.6"
)


def test_the_lightning_expected_is_the_one_found() -> None:
    """Where a run asks for a Lightning version (make integration), it is the one in use."""
    import os

    assert os.environ.get("LIGHTNING_EXPECTED", LIGHTNING) == LIGHTNING


def supervise(tmp_path: Path, *, safe_globals: bool) -> Path:
    root = tmp_path / "GPT-SoVITS"
    root.mkdir(exist_ok=True)
    return write_config(
        tmp_path,
        adapter="gpt-sovits-s1",
        command=[sys.executable, str(SCRIPT), OUT, "3", "2"],
        cwd=root,
        checkpoint_dir=f"{OUT}/ckpt",
        checkpoints={"trainer_safe_globals": safe_globals},
        more={"heartbeat": {"mode": "off"}},
    )


@from_2_6
@pytest.mark.slow
def test_without_safe_globals_the_doomed_resume_is_refused_and_it_really_would_fail(tmp_path: Path) -> None:
    config = supervise(tmp_path, safe_globals=False)
    refused = run_cli("run", "-c", str(config))
    assert refused.returncode == 3, refused.stdout[-3000:]
    data = status(config)
    assert [a["cause"] for a in data["attempts"]] == ["crash"], "nothing doomed was launched"
    assert f"pytorch-lightning {LIGHTNING}" in json.dumps(data)
    assert "trainer_safe_globals = true" in json.dumps(data)
    # The control: the same trainer, relaunched by hand on that directory, fails exactly so.
    root = tmp_path / "GPT-SoVITS"
    alone = subprocess.run(
        [sys.executable, str(SCRIPT), OUT, "3"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=scaled(240),
        check=False,
    )
    assert alone.returncode != 0
    assert "Unsupported global: GLOBAL pathlib.PosixPath" in alone.stderr + alone.stdout


@from_2_6
@pytest.mark.slow
def test_with_safe_globals_the_unmodified_trainer_resumes_from_the_verified_state(tmp_path: Path) -> None:
    config = supervise(tmp_path, safe_globals=True)
    result = run_cli("run", "-c", str(config))
    assert result.returncode == 0, result.stdout[-3000:]
    assert [a["cause"] for a in status(config)["attempts"]] == ["crash", "completed"]
    lines = trainer_output(tmp_path)
    resumed = [line for line in lines if "Restored all states from the checkpoint at" in line]
    assert len(resumed) == 1
    assert "epoch=1-step=8.ckpt" in resumed[0]
    assert any(line.startswith("ckpt_path: ") and line.endswith("epoch=1-step=8.ckpt") for line in lines)


@from_2_6
@pytest.mark.slow
def test_a_plan_for_a_trainer_started_by_hand_asks_for_the_shim_and_it_is_enough(tmp_path: Path) -> None:
    """`plan --apply` for a trainer another tool starts (a SLURM prolog): the shim is not
    in that trainer's environment unless the user puts it there, so the plan refuses and
    says what to export; with that exported, the plan stands and the unmodified trainer,
    started by hand, loads the verified state."""
    import os

    config = supervise(tmp_path, safe_globals=True)
    assert run_cli("run", "-c", str(config)).returncode == 0
    bare = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TRAIN_SUPERVISOR_SAFE_GLOBALS")}
    planned = subprocess.run(
        [*CLI, "plan", "-c", str(config), "--apply"], capture_output=True, text=True, env=bare, check=False
    )
    assert planned.returncode == 1, planned.stdout + planned.stderr
    (exports,) = re.findall(r"`export ([^`]*)`", planned.stdout + planned.stderr)
    shim = dict(pair.split("=", 1) for pair in exports.split())
    with_shim = {**bare, **shim}
    planned = subprocess.run(
        [*CLI, "plan", "-c", str(config), "--apply"],
        capture_output=True,
        text=True,
        env=with_shim,
        check=False,
    )
    assert planned.returncode == 0, planned.stdout + planned.stderr
    by_hand = subprocess.run(
        [sys.executable, str(SCRIPT), OUT, "3"],
        cwd=tmp_path / "GPT-SoVITS",
        capture_output=True,
        text=True,
        timeout=scaled(240),
        env=with_shim,
        check=False,
    )
    assert by_hand.returncode == 0, by_hand.stderr[-3000:]
    assert "Restored all states from the checkpoint at" in by_hand.stdout + by_hand.stderr


@before_2_6
def test_before_2_6_the_unmodified_trainer_resumes_without_the_shim(tmp_path: Path) -> None:
    config = supervise(tmp_path, safe_globals=False)
    result = run_cli("run", "-c", str(config))
    assert result.returncode == 0, result.stdout[-3000:]
    data = status(config)
    assert [a["cause"] for a in data["attempts"]] == ["crash", "completed"]
    assert "trainer_safe_globals" not in json.dumps(data["events"])  # nothing asked of the user
    lines = trainer_output(tmp_path)
    resumed = [line for line in lines if "Restored all states from the checkpoint at" in line]
    assert len(resumed) == 1
    assert "epoch=1-step=8.ckpt" in resumed[0]


@from_2_6
@pytest.mark.slow
def test_a_finished_run_is_not_a_problem_for_a_resume_it_will_never_make(tmp_path: Path) -> None:
    """Settling a finished run launches nothing: that the trainer could not load its last
    state weights-only (no shim) is a problem for a relaunch only."""
    config = supervise(tmp_path, safe_globals=False)
    text = config.read_text().replace(f'"{OUT}", "3", "2"]', f'"{OUT}", "3"]')
    assert text != config.read_text()
    config.write_text(text)
    result = run_cli("run", "-c", str(config))
    assert result.returncode == 0, result.stdout[-3000:]
    data = status(config)
    assert [a["cause"] for a in data["attempts"]] == ["completed"]
    assert data["problems"] == []
    assert "final_state" in [e["kind"] for e in data["events"]]
