"""The `gpt-sovits-s2` adapter: its model of the s2 trainers' resume rule (sentinel and
numbered files ordered by the epoch inside; G and D, or G alone for v3/v4), its readings
of their output, and end to end with the real CLI around the layout twin
(tests/support/trainers/gpt_sovits_s2_twin.py)."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch

import trainer_adapters
from supervisor.checkpoints.plan import Candidate, Snapshot, Status, plan, with_content_step
from supervisor.config import ConfigError, load
from tests.support.load import scaled
from tests.support.twins import run_cli, status, trainer_output, twin_command, write_config, write_faults
from trainer_adapters.base import NamedCheckpoint, Said
from trainer_adapters.rules import read_line

ADAPTER = trainer_adapters.get("gpt-sovits-s2")
LAYOUT = ADAPTER.layout(ADAPTER.options())
LORA = ADAPTER.layout(ADAPTER.options.model_validate({"version": "v4"}))
EXP = Path("/srv/GPT-SoVITS/logs/myexp/logs_s2_v2Pro")
LORA_DIR = Path("/srv/GPT-SoVITS/logs/myexp/logs_s2_v4_lora_32")
SENTINEL = "233333333333"


# --- names, and the trainer's choice ---------------------------------------------------


def named(name: str, directory: Path = EXP, layout: Any = LAYOUT) -> NamedCheckpoint:
    found = layout.parse(directory / name)
    assert found is not None, name
    return found


def test_names_the_trainer_globs_and_what_they_count() -> None:
    g = named("G_416.pth")
    assert (g.role, g.step, g.content_step, g.in_place) == ("G", None, True, False)
    sentinel = named(f"D_{SENTINEL}.pth")
    assert (sentinel.role, sentinel.step, sentinel.in_place) == ("D", None, True)
    # Steps are epochs: the content's `iteration`, for numbered files and the sentinel alike.
    for ckpt in (g, sentinel):
        expect = LAYOUT.expect(ckpt)
        assert (expect.step_key, expect.epoch_key) == ("iteration", "iteration")
        assert expect.required_keys == ("model", "iteration", "optimizer", "learning_rate")
    assert (LAYOUT.roles, LAYOUT.recursive) == (("G", "D"), False)
    # v3/v4: G only; a D file there is nothing the trainer looks at.
    assert LORA.roles == ("G",)
    assert named(f"G_{SENTINEL}.pth", LORA_DIR, LORA).in_place
    assert LORA.parse(LORA_DIR / "D_20.pth") is None


@pytest.mark.parametrize(
    ("path", "what"),
    [
        ("SoVITS_weights_v2Pro/myexp_e8_s208.pth", "SoVITS_weights export"),
        ("SoVITS_weights_v4/myexp_e2_s52_l32.pth", "SoVITS_weights export"),
        ("GPT_SoVITS/pretrained_models/v2Pro/s2Gv2Pro.pth", "pretrained"),
        ("GPT_SoVITS/pretrained_models/gsv-v2final-pretrained/s2D2333k.pth", "pretrained"),
        ("1723456789.123456.pth", "orphan temp file"),
    ],
)
def test_exports_pretrained_weights_and_temp_files_are_not_resume_points(path: str, what: str) -> None:
    file = Path("/srv/GPT-SoVITS") / path
    assert LAYOUT.parse(file) is None
    assert what in (LAYOUT.ignored(file) or "")


def test_pick_is_the_newest_G_and_D_each_by_the_digits_of_the_path_and_the_sentinel_always_wins() -> None:
    files = [named(n) for n in ("G_208.pth", "G_416.pth", "D_208.pth")]
    picked = LAYOUT.pick(files)
    assert (picked["G"].path.name, picked["D"].path.name) == ("G_416.pth", "D_208.pth")
    picked = LAYOUT.pick([*files, named(f"G_{SENTINEL}.pth")])
    assert picked["G"].path.name == f"G_{SENTINEL}.pth"
    # logs_s2_* always has a digit: a digit-less name just sorts lowest, never raises.
    assert (
        LAYOUT.pick([named("G_latest.pth"), named("G_26.pth"), named("D_26.pth")])["G"].path.name
        == "G_26.pth"
    )
    # D first, then G, and the fallback loads pretrained weights over both: a half is nothing.
    assert LAYOUT.pick([named("G_26.pth")]) == {}
    assert LAYOUT.pick([named("D_26.pth")]) == {}


def test_the_digit_sort_runs_over_the_path_as_the_trainer_spells_it() -> None:
    """`logs/<exp>/logs_s2_<v>/...` relative to its cwd: a `run①` folder above the repo
    (int("①") raises) is no part of it, and the plan does not refuse."""
    odd = Path("/srv/run①/GPT-SoVITS/logs/myexp/logs_s2_v2Pro")
    files = [named("G_416.pth", odd), named("D_416.pth", odd)]
    assert LAYOUT.pick(files) == {"G": files[0], "D": files[1]}


# --- the planner on realistic directories -----------------------------------------------


def ok(name: str, epoch: int, directory: Path = EXP, layout: Any = LAYOUT) -> Candidate:
    return Candidate(with_content_step(named(name, directory, layout), epoch), Status.OK)


def bad(name: str, directory: Path = EXP, layout: Any = LAYOUT) -> Candidate:
    return Candidate(named(name, directory, layout), Status.REJECTED, "torn")


def test_plan_a_leftover_older_sentinel_is_moved_aside_for_the_newer_numbered_pair() -> None:
    files = [ok(f"G_{SENTINEL}.pth", 8), ok(f"D_{SENTINEL}.pth", 8), ok("G_416.pth", 16), ok("D_416.pth", 16)]
    the_plan = plan(LAYOUT, files)
    assert (the_plan.ok, the_plan.target_step) == (True, 16)
    assert the_plan.lands_on == {"G": EXP / "G_416.pth", "D": EXP / "D_416.pth"}
    assert sorted(m.path.name for m in the_plan.moves) == [f"D_{SENTINEL}.pth", f"G_{SENTINEL}.pth"]


def test_plan_a_newer_sentinel_wins_as_the_trainer_would_have_it() -> None:
    files = [ok(f"G_{SENTINEL}.pth", 16), ok(f"D_{SENTINEL}.pth", 16), ok("G_208.pth", 8), ok("D_208.pth", 8)]
    the_plan = plan(LAYOUT, files)
    assert (the_plan.ok, the_plan.target_step, the_plan.moves) == (True, 16, [])
    assert the_plan.lands_on["G"] == EXP / f"G_{SENTINEL}.pth"


def test_plan_restores_a_torn_sentinel_from_its_verified_copy(tmp_path: Path) -> None:
    copy = tmp_path / "verified" / "G"
    snaps = [Snapshot("G", 4, EXP / f"G_{SENTINEL}.pth", copy, in_place=True)]
    the_plan = plan(LAYOUT, [bad(f"G_{SENTINEL}.pth"), ok(f"D_{SENTINEL}.pth", 4)], snaps)
    assert (the_plan.ok, the_plan.target_step) == (True, 4)
    assert [(r.copy, r.path) for r in the_plan.restores] == [(copy, EXP / f"G_{SENTINEL}.pth")]
    assert [m.path.name for m in the_plan.moves] == [f"G_{SENTINEL}.pth"]


def test_plan_g_only_for_v3_and_v4_and_why_the_version_must_be_right() -> None:
    files = [
        ok("G_26.pth", 1, LORA_DIR, LORA),
        ok("G_52.pth", 2, LORA_DIR, LORA),
        bad("G_78.pth", LORA_DIR, LORA),
    ]
    the_plan = plan(LORA, files)
    assert (the_plan.ok, the_plan.target_step) == (True, 2)
    assert the_plan.lands_on == {"G": LORA_DIR / "G_52.pth"}
    # Told v2Pro (G and D), a G-only directory has no complete state: nothing is moved
    # into a fresh start; the trainer, finding no D, starts as it would alone.
    wrong = plan(LAYOUT, [ok("G_26.pth", 1, LORA_DIR), ok("G_52.pth", 2, LORA_DIR)])
    assert wrong.target_step is None
    assert wrong.moves == []
    assert wrong.lands_on == {}


def test_a_version_the_directory_name_contradicts_is_refused() -> None:
    assert ADAPTER.check_dir is not None
    v2pro = ADAPTER.options()
    v4 = ADAPTER.options.model_validate({"version": "v4"})
    assert ADAPTER.check_dir(v4, Path("/r/logs/exp/logs_s2_v4_lora_32")) is None
    assert ADAPTER.check_dir(v2pro, Path("/r/logs/exp/logs_s2_v2Pro")) is None
    problem = ADAPTER.check_dir(v2pro, Path("/r/logs/exp/logs_s2_v4_lora_32"))
    assert problem is not None
    assert problem.startswith("adapter.version: 'v2Pro', but logs_s2_v4_lora_32 holds a v4 run")
    assert ADAPTER.check_dir(v4, Path("/r/logs/exp/logs_s2")) is None, "old unversioned directories"


def test_the_version_option() -> None:
    assert ADAPTER.options().version == "v2Pro"  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="version"):
        ADAPTER.options.model_validate({"version": "v5"})
    with pytest.raises(ValueError, match="g_only"):
        ADAPTER.options.model_validate({"g_only": True})


def test_a_config_with_the_version(tmp_path: Path) -> None:
    def config_with(**options: Any) -> Path:
        directory = "logs/x/logs_s2_v4_lora_32"
        return write_config(
            tmp_path,
            adapter="gpt-sovits-s2",
            command=["python"],
            cwd=tmp_path,
            checkpoint_dir=directory,
            options=options,
        )

    assert load(config_with(version="v4"), for_launch=False).adapter.options.version == "v4"  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r"adapter\.version"):
        load(config_with(version="4"), for_launch=False)


# --- output lines ------------------------------------------------------------------------


def said(line: str) -> list[tuple[Said, int | None, int | None, str | None]]:
    return [(r.said, r.step, r.epoch, r.path) for r in read_line(ADAPTER.lines, line)]


def test_progress_loaded_fresh_start_and_completed_lines() -> None:
    assert said("INFO:myexp:Train Epoch: 3 [42%]") == [(Said.PROGRESS, None, 3, None)]
    assert said("INFO:myexp:====> Epoch: 3") == [(Said.PROGRESS, None, 3, None)]
    path = f"logs/myexp/logs_s2_v2Pro/G_{SENTINEL}.pth"
    assert said(f"INFO:myexp:Loaded checkpoint '{path}' (iteration 8)") == [(Said.LOADED, None, 8, path)]
    assert said("start training from epoch 1") == [(Said.FRESH_START, None, None, None)]
    assert said("start training from epoch 9") == []
    assert said("start training from epoch 10") == []
    assert said("training done") == [(Said.COMPLETED, None, None, None)]
    for line in (
        path,
        "load ",
        "INFO:myexp:loaded D",
        "INFO:myexp:loaded pretrained GPT_SoVITS/pretrained_models/v2Pro/s2Gv2Pro.pth",
        "INFO:myexp:saving ckpt myexp_e8:Success.",
        " 42%|████▏     | 11/26 [00:05<00:06,  2.31it/s]",
        "INFO:myexp:{'train': {'betas': [0.8, 0.99], 'gpu_numbers': '0'}, 'data': {'exp_dir': 'logs/myexp'}}",
    ):
        assert said(line) == [], line


@pytest.mark.parametrize(
    ("text", "count", "finite"),
    [
        ("2.61, 2.13, 5.9, 21.7, 1.38, 1.52", 6, True),
        ("nan, 2.13, 5.9, 21.7, 1.38, 1.52", 6, False),
        ("0.4216", 1, True),  # v3/v4: [cfm_loss, step, lr]
        ("inf", 1, False),
    ],
)
def test_the_loss_list_carries_no_step(text: str, count: int, finite: bool) -> None:
    (reading,) = read_line(ADAPTER.lines, f"INFO:myexp:[{text}, 208, 9.99750015625e-05]")
    assert reading.said is Said.LOSS
    assert reading.step is None, "its number is the global step; this adapter's steps are epochs"
    assert len(reading.losses) == count
    assert reading.nonfinite is not finite
    assert read_line(ADAPTER.lines, f"INFO:myexp:[{text}, 1.0, 208, 9.99750015625e-05]") == []


@pytest.mark.parametrize(
    ("line", "explains"),
    [
        ("AttributeError: 'HParams' object has no attribute 'gpu_numbers'", "TEMP/tmp_s2.json"),
        (
            "_pickle.UnpicklingError: Weights only load failed. ... WeightsUnpickler error: Unsupported global:"
            " GLOBAL utils.HParams was not an allowed global by default.",
            "torch < 2.6",
        ),
        (
            "RuntimeError: [enforce fail at inline_container.cc:476] . PytorchStreamWriter failed writing"
            " file data/2085: file write failed",
            "disk",
        ),
    ],
)
def test_fatal_lines_explain_themselves(line: str, explains: str) -> None:
    (reading,) = read_line(ADAPTER.lines, line)
    assert reading.said is Said.FATAL
    assert explains in reading.explain


def test_recognises_s2_checkpoints_by_name_and_directory(tmp_path: Path) -> None:
    assert ADAPTER.recognise is not None
    exp = tmp_path / "GPT-SoVITS" / "logs" / "myexp"
    for directory in (
        "logs_s2_v2Pro",
        "logs_s2_v2ProPlus",
        "logs_s2_v1",
        "logs_s2_v4_lora_32",
        "logs_s2_v3",
        "logs_s2",
    ):
        for name in ("G_208.pth", "D_208.pth", f"G_{SENTINEL}.pth"):
            assert ADAPTER.recognise(exp / directory / name), (directory, name)
    assert trainer_adapters.detect(exp / "logs_s2_v2Pro" / f"G_{SENTINEL}.pth") is ADAPTER
    for path in (
        exp / "logs_s2_v2Pro" / "G_latest.pth",
        exp / "logs_s1_v2Pro" / "ckpt" / "epoch=4-step=52.ckpt",
        tmp_path / "GPT-SoVITS" / "SoVITS_weights_v2Pro" / "myexp_e8_s208.pth",
        tmp_path / "vits" / "logs" / "ljs_base" / "G_1000.pth",
        tmp_path / "Applio" / "logs" / "voice" / "G_2333333.pth",
    ):
        assert not ADAPTER.recognise(path), path


def test_launch() -> None:
    assert ADAPTER.launch is not None
    assert ADAPTER.launch.checkpoint_dir is None, "the directory is in the JSON config, not in argv"
    assert ADAPTER.exit_codes_trusted
    assert ADAPTER.fp16_loss_scaling
    assert ADAPTER.args == ()


# --- end to end with the twin --------------------------------------------------------------

PRETRAINED_G = "GPT_SoVITS/pretrained_models/v2Pro/s2Gv2Pro.pth"
PRETRAINED_D = "GPT_SoVITS/pretrained_models/v2Pro/s2Dv2Pro.pth"


def sovits_root(tmp_path: Path, **train: Any) -> Path:
    """A GPT-SoVITS checkout with the pretrained G and D, and TEMP/tmp_s2.json as the WebUI
    writes it (10 batches an epoch; `train` overrides: epochs, if_save_latest, ...)."""
    root = tmp_path / "GPT-SoVITS"
    for name, seed in ((PRETRAINED_G, 5), (PRETRAINED_D, 6)):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(seed)
        torch.save(
            {"weight": torch.nn.Linear(2, 2).state_dict(), "config": {}, "info": "pretrained"}, root / name
        )
    write_s2_config(root, **train)
    return root


def write_s2_config(root: Path, *, version: str = "v2Pro", step_s: float = 0.01, **train: Any) -> None:
    settings = {
        "log_interval": 5,
        "seed": 1234,
        "epochs": 4,
        "learning_rate": 0.0001,
        "betas": [0.8, 0.99],
        "eps": 1e-09,
        "batch_size": 4,
        "fp16_run": True,
        "lr_decay": 0.999875,
        "text_low_lr_rate": 0.4,
        "pretrained_s2G": PRETRAINED_G,
        "pretrained_s2D": PRETRAINED_D,
        "if_save_latest": True,
        "if_save_every_weights": True,
        "save_every_epoch": 1,
        "gpu_numbers": "0",
        "lora_rank": "32",
        **train,
    }
    config = {
        "train": settings,
        "data": {"exp_dir": "logs/myexp"},
        "s2_ckpt_dir": "logs/myexp",
        "model": {"version": version},
        "name": "myexp",
        "save_weight_dir": f"SoVITS_weights_{version}",
        "twin": {"batches_per_epoch": 10, "step_s": step_s},
    }
    (root / "TEMP").mkdir(exist_ok=True)
    (root / "TEMP" / "tmp_s2.json").write_text(json.dumps(config))


ARGV = twin_command("gpt_sovits_s2_twin.py", "--config", "TEMP/tmp_s2.json")


def supervise(
    tmp_path: Path, root: Path, checkpoint_dir: str = "logs/myexp/logs_s2_v2Pro", **options: Any
) -> Path:
    return write_config(
        tmp_path,
        adapter="gpt-sovits-s2",
        command=ARGV,
        cwd=root,
        checkpoint_dir=checkpoint_dir,
        options=options,
    )


def starts(lines: list[str]) -> list[str]:
    """Where each attempt started from: the trainer's own lines, paths by name."""
    wanted = ("INFO:myexp:Loaded checkpoint", "start training from epoch", "INFO:myexp:loaded pretrained")
    return [
        line.removeprefix("INFO:myexp:").replace("logs/myexp/logs_s2_v2Pro/", "").replace(SENTINEL, "S")
        for line in lines
        if line.startswith(wanted)
    ]


def quarantined(tmp_path: Path) -> list[str]:
    """The names moved aside (the sentinel as S), each with its note."""
    found = sorted((tmp_path / "state" / "quarantine").glob("*/*.pth"))
    for path in found:
        original = Path(json.loads(path.with_name(path.name + ".json").read_text())["original_path"])
        assert (original.name, original.parent.parent) == (
            path.name,
            tmp_path / "GPT-SoVITS" / "logs" / "myexp",
        )
    return sorted(p.name.replace(SENTINEL, "S") for p in found)


def run_alone(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(ARGV, cwd=root, capture_output=True, text=True, timeout=scaled(120), check=False)


def iteration(path: Path) -> int:
    return int(torch.load(path, weights_only=True)["iteration"])


@pytest.mark.slow
def test_left_alone_a_torn_sentinel_means_a_fresh_start_that_overwrites_the_good_D(tmp_path: Path) -> None:
    """The control experiment: G's sentinel torn at epoch 3, D's still holds epoch 2. The
    trainer loads D, fails on G, starts over from the pretrained weights, and its first
    save overwrites D's sentinel with epoch 1 of the restarted run."""
    root = sovits_root(tmp_path, step_s=0.0)
    d = root / "logs" / "myexp" / "logs_s2_v2Pro" / f"D_{SENTINEL}.pth"
    write_faults(root, [{"at": "G@3", "kind": "torn"}])
    assert run_alone(root).returncode == -9
    assert iteration(d) == 2
    assert list(root.glob("*.pth")), "the move was cut: its temp file stays in the cwd"
    write_faults(root, [{"at": 12, "kind": "sigkill"}])  # to look at the files after the next save
    again = run_alone(root)
    assert starts(again.stdout.splitlines()) == [
        "Loaded checkpoint 'D_S.pth' (iteration 2)",
        f"loaded pretrained {PRETRAINED_G}",
        f"loaded pretrained {PRETRAINED_D}",
        "start training from epoch 1",
    ]
    assert iteration(d) == 1, "epoch 2's D is gone"


@pytest.mark.slow
def test_a_torn_sentinel_is_restored_from_its_verified_copy(tmp_path: Path) -> None:
    root = sovits_root(tmp_path)
    # Attempt 1 saves epoch 1 and crashes in epoch 2; attempt 2 tears G at epoch 2's save.
    write_faults(root, [{"at": 15, "kind": "exception"}, {"at": "G@2", "kind": "torn"}])
    config = supervise(tmp_path, root)
    result = run_cli("run", "-c", str(config))
    assert result.returncode == 0, result.stdout[-3000:]
    assert starts(trainer_output(tmp_path)) == [
        f"loaded pretrained {PRETRAINED_G}",
        f"loaded pretrained {PRETRAINED_D}",
        "start training from epoch 1",
        *[
            "Loaded checkpoint 'D_S.pth' (iteration 1)",
            "Loaded checkpoint 'G_S.pth' (iteration 1)",
            "start training from epoch 2",
        ]
        * 2,
    ]
    assert "training done" in trainer_output(tmp_path)
    assert quarantined(tmp_path) == ["G_S.pth"]
    data = status(config)
    assert data["state"] == "completed"
    assert [a["cause"] for a in data["attempts"]] == ["crash", "crash", "completed"]
    assert (
        data["last_plan"]["summary"]
        == f"resume from epoch 1 (G_{SENTINEL}.pth, D_{SENTINEL}.pth); move aside 1: G_{SENTINEL}.pth; restore 1: G_{SENTINEL}.pth"
    )
    assert iteration(root / "logs" / "myexp" / "logs_s2_v2Pro" / f"G_{SENTINEL}.pth") == 4


@pytest.mark.slow
def test_nan_weights_saved_over_the_only_checkpoint_are_replaced_by_the_verified_copies(
    tmp_path: Path,
) -> None:
    root = sovits_root(tmp_path)
    # Attempt 1 saves epoch 1 (its verified copies are kept) and crashes; attempt 2's
    # weights go NaN in epoch 2 and its save overwrites the pair in place, then it crashes.
    faults = [{"at": 12, "kind": "exception"}, {"at": 13, "kind": "nan"}, {"at": 25, "kind": "exception"}]
    write_faults(root, faults)
    config = supervise(tmp_path, root)
    result = run_cli("run", "-c", str(config))
    assert result.returncode == 0, result.stdout[-3000:]
    lines = trainer_output(tmp_path)
    resumed = ["Loaded checkpoint 'D_S.pth' (iteration 1)", "Loaded checkpoint 'G_S.pth' (iteration 1)"]
    assert starts(lines)[3:] == [*resumed, "start training from epoch 2"] * 2
    assert any(r.nonfinite for line in lines for r in read_line(ADAPTER.lines, line) if r.said is Said.LOSS)
    assert quarantined(tmp_path) == ["D_S.pth", "G_S.pth"]
    assert "restore 2: " in status(config)["last_plan"]["summary"]


@pytest.mark.slow
def test_a_leftover_older_sentinel_is_moved_aside_and_the_trainer_lands_on_the_newest_epoch(
    tmp_path: Path,
) -> None:
    root = sovits_root(tmp_path, epochs=2, step_s=0.0)
    assert run_alone(root).returncode == 0  # an earlier run with if_save_latest: sentinel at epoch 2
    write_s2_config(root, epochs=6, if_save_latest=False)
    write_faults(root, [{"at": 45, "kind": "sigkill"}])
    config = supervise(tmp_path, root)
    result = run_cli("run", "-c", str(config))
    assert result.returncode == 0, result.stdout[-3000:]
    assert starts(trainer_output(tmp_path)) == [
        "Loaded checkpoint 'D_S.pth' (iteration 2)",
        "Loaded checkpoint 'G_S.pth' (iteration 2)",
        "start training from epoch 3",
        "Loaded checkpoint 'D_40.pth' (iteration 4)",
        "Loaded checkpoint 'G_40.pth' (iteration 4)",
        "start training from epoch 5",
    ]
    assert quarantined(tmp_path) == ["D_S.pth", "G_S.pth"]
    note = json.loads(next((tmp_path / "state" / "quarantine").glob(f"*/G_{SENTINEL}.pth.json")).read_text())
    assert "not part of the newest complete verified state" in note["reason"]
    summary = status(config)["last_plan"]["summary"]
    assert summary.startswith("resume from epoch 4 (G_40.pth, D_40.pth)"), "it counts epochs"


@pytest.mark.slow
def test_a_newer_sentinel_next_to_older_numbered_files_wins(tmp_path: Path) -> None:
    root = sovits_root(tmp_path, epochs=2, step_s=0.0, if_save_latest=False)
    assert run_alone(root).returncode == 0  # an earlier run without it: G_20/D_20 at epoch 2
    write_s2_config(root, epochs=6)
    write_faults(root, [{"at": 45, "kind": "sigkill"}])
    config = supervise(tmp_path, root)
    result = run_cli("run", "-c", str(config))
    assert result.returncode == 0, result.stdout[-3000:]
    assert starts(trainer_output(tmp_path)) == [
        "Loaded checkpoint 'D_20.pth' (iteration 2)",
        "Loaded checkpoint 'G_20.pth' (iteration 2)",
        "start training from epoch 3",
        "Loaded checkpoint 'D_S.pth' (iteration 4)",
        "Loaded checkpoint 'G_S.pth' (iteration 4)",
        "start training from epoch 5",
    ]
    assert quarantined(tmp_path) == []
    assert (
        status(config)["last_plan"]["summary"] == f"resume from epoch 4 (G_{SENTINEL}.pth, D_{SENTINEL}.pth)"
    )


@pytest.mark.slow
def test_v4_lora_holds_G_only_and_resumes_from_the_newest_good_G(tmp_path: Path) -> None:
    root = sovits_root(tmp_path, version="v4", if_save_latest=False)
    write_faults(root, [{"at": "G@3", "kind": "torn"}])
    config = supervise(tmp_path, root, "logs/myexp/logs_s2_v4_lora_32", version="v4")
    result = run_cli("run", "-c", str(config))
    assert result.returncode == 0, result.stdout[-3000:]
    lines = trainer_output(tmp_path)
    assert [line.replace("logs/myexp/logs_s2_v4_lora_32/", "") for line in starts(lines)] == [
        f"loaded pretrained {PRETRAINED_G}",
        "start training from epoch 1",
        "Loaded checkpoint 'G_20.pth' (iteration 2)",
        "start training from epoch 3",
    ]
    assert any(
        r.said is Said.LOSS and len(r.losses) == 1 for line in lines for r in read_line(ADAPTER.lines, line)
    )
    assert quarantined(tmp_path) == ["G_30.pth"]
    assert not list((root / "logs" / "myexp" / "logs_s2_v4_lora_32").glob("D_*"))
    assert status(config)["state"] == "completed"


@pytest.mark.slow
def test_a_config_without_what_the_webui_injects_ends_the_run_at_once(tmp_path: Path) -> None:
    root = sovits_root(tmp_path)
    config_file = root / "TEMP" / "tmp_s2.json"
    data = json.loads(config_file.read_text())
    del data["train"]["gpu_numbers"]
    config_file.write_text(json.dumps(data))
    config = supervise(tmp_path, root)
    result = run_cli("run", "-c", str(config))
    assert result.returncode == 3, result.stdout[-3000:]
    data = status(config)
    assert [a["cause"] for a in data["attempts"]] == ["not-retryable"]
    assert "lacks a key the WebUI injects" in json.dumps(data)


# --- verify ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def verified(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """`verify --adapter gpt-sovits-s2 --json` on what the twin wrote (G/D_10 ... G/D_30,
    the exports, the sentinel of an earlier run), on damaged files, on the pretrained
    weights and an orphan temp file: one result per file name."""
    root = sovits_root(tmp_path_factory.mktemp("verify"), epochs=3, step_s=0.0, if_save_latest=False)
    assert run_alone(root).returncode == 0
    exp = root / "logs" / "myexp" / "logs_s2_v2Pro"
    good: dict[str, Any] = torch.load(exp / "G_30.pth", weights_only=True)
    (exp / f"G_{SENTINEL}.pth").write_bytes((exp / "G_20.pth").read_bytes())
    data = (exp / "D_30.pth").read_bytes()
    (exp / "D_40.pth").write_bytes(data[: len(data) // 2])
    nan_model = {k: torch.full_like(v, math.nan) for k, v in good["model"].items()}
    torch.save({**good, "model": nan_model}, exp / "G_40.pth")
    torch.save({k: v for k, v in good.items() if k != "learning_rate"}, exp / "G_50.pth")
    torch.save({**good, "iteration": 2.5}, exp / "G_60.pth")
    (exp / "G_70.pth").write_bytes(b"")
    orphan = root / "1723456789.123456.pth"
    orphan.write_bytes(data[:100])
    paths = [exp / n for n in ("G_10.pth", "D_10.pth", "G_30.pth", f"G_{SENTINEL}.pth")]
    paths += [exp / n for n in ("D_40.pth", "G_40.pth", "G_50.pth", "G_60.pth", "G_70.pth")]
    paths += [root / "SoVITS_weights_v2Pro" / "myexp_e3_s30.pth", root / PRETRAINED_G, orphan]
    result = run_cli("verify", "--adapter", "gpt-sovits-s2", "--json", *map(str, paths))
    assert result.returncode == 1, result.stderr
    return {Path(r["path"]).name: r for r in map(json.loads, result.stdout.splitlines())}


@pytest.mark.slow
def test_verify_gives_the_trainers_step_and_the_epoch_it_resumes_by(
    verified: dict[str, dict[str, Any]],
) -> None:
    results = [verified[n] for n in ("G_10.pth", "D_10.pth", "G_30.pth", f"G_{SENTINEL}.pth")]
    # `step` is the trainer's global step (the name's number; the sentinel has none),
    # `epoch` the content's `iteration`, which orders its states.
    assert [(r["ok"], r["step"], r["epoch"], r["resume_unit"]) for r in results] == [
        (True, 10, 1, "epoch"),
        (True, 10, 1, "epoch"),
        (True, 30, 3, "epoch"),
        (True, None, 2, "epoch"),
    ]


@pytest.mark.parametrize(
    ("name", "what"),
    [
        ("myexp_e3_s30.pth", "SoVITS_weights export"),
        ("s2Gv2Pro.pth", "pretrained weights"),
        ("1723456789.123456.pth", "orphan temp file"),
    ],
)
def test_verify_says_what_is_not_a_resume_point(
    verified: dict[str, dict[str, Any]], name: str, what: str
) -> None:
    result = verified[name]
    assert result["ok"] is False
    assert "not a resume checkpoint" in result["reason"]
    assert what in result["reason"]


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("D_40.pth", "zip"),
        ("G_40.pth", "nan"),
        ("G_50.pth", "missing key: learning_rate"),
        ("G_60.pth", "not a whole number"),
        ("G_70.pth", "empty"),
    ],
)
def test_verify_rejects_damage(verified: dict[str, dict[str, Any]], name: str, reason: str) -> None:
    result = verified[name]
    assert result["ok"] is False
    assert reason in result["reason"].lower(), result["reason"]
