"""The `vits` adapter: its model of VITS's resume rule, its readings of VITS's output, and
end to end with the real CLI around the layout twin (tests/support/trainers/vits_twin.py)."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch

import trainer_adapters
from supervisor.checkpoints.plan import Candidate, Status, plan, with_content_step
from tests.support.load import scaled
from tests.support.twins import run_cli, status, trainer_output, twin_command, write_config, write_faults
from tests.support.vits import MODEL_DIR, loaded, quarantined, vits_root
from trainer_adapters.base import NamedCheckpoint, RuleFails, Said
from trainer_adapters.rules import read_line

ADAPTER = trainer_adapters.get("vits")
LAYOUT = ADAPTER.layout(ADAPTER.options())
# The run directory's own path has digits (vits2); VITS sorts by those of ./logs/ljs_base/.
EXP = Path("/srv/vits2/logs/ljs_base")


# --- names, and the trainer's choice ---------------------------------------------------


def named(name: str, directory: Path = EXP) -> NamedCheckpoint:
    found = LAYOUT.parse(directory / name)
    assert found is not None, name
    return found


def test_names_the_trainer_globs_and_what_they_count() -> None:
    g = named("G_4000.pth")
    # The name's number is a global step VITS recomputes on resume; states count the
    # epoch inside (`iteration`), and the number tells the saves of one epoch apart.
    assert (g.role, g.step, g.save, g.in_place, g.content_step) == ("G", None, 4000, False, True)
    assert (named("D_0.pth").role, named("D_0.pth").save) == ("D", 0)
    expect = LAYOUT.expect(g)
    assert (expect.step_key, expect.epoch_key, expect.model_key) == ("iteration", "iteration", "model")
    assert expect.required_keys == ("model", "iteration", "optimizer", "learning_rate")
    # Its LR schedulers are built outside its try with last_epoch = epoch - 2.
    assert expect.each_item == (("optimizer.param_groups", ("initial_lr",)),)
    assert (LAYOUT.roles, LAYOUT.recursive) == (("G", "D"), False)
    # glob("G_*.pth") matches any such name; only the number makes it a save.
    assert named("G_best.pth").save is None
    for other in ("G_4000.pth.bad", "config.json", "train.log", "events.out.tfevents.1.host", "g_10.pth"):
        assert LAYOUT.parse(EXP / other) is None, other
    assert LAYOUT.parse(EXP / "pretrained_ljs.pth") is None
    assert "pretrained" in (LAYOUT.ignored(EXP / "pretrained_ljs.pth") or "")
    assert LAYOUT.ignored(EXP / "config.json") is None


def test_pick_is_the_newest_G_and_the_newest_D_each_on_its_own() -> None:
    files = [named(n) for n in ("G_900.pth", "G_1000.pth", "D_900.pth", "G_30.pth")]
    picked = LAYOUT.pick(files)
    # A crash between the two saves: G and D come from different saves.
    assert (picked["G"].path.name, picked["D"].path.name) == ("G_1000.pth", "D_900.pth")
    assert LAYOUT.pick([]) == {}
    # G first: without one, `f_list[-1]` raises before anything loads; without a D, G
    # stays loaded (and the epoch starts over at 1).
    assert LAYOUT.pick([named("D_0.pth")]) == {}
    assert LAYOUT.pick([named("G_0.pth")]) == {"G": named("G_0.pth")}


def test_of_equal_numbers_the_last_listed_wins_as_in_its_stable_sort() -> None:
    first, second = named("G_010.pth"), named("G_10.pth")
    assert LAYOUT.pick([first, second, named("D_10.pth")])["G"] == second
    assert LAYOUT.pick([second, first, named("D_10.pth")])["G"] == first


def test_a_model_name_with_glob_metacharacters_hides_its_own_files() -> None:
    hidden = Path("/srv/vits/logs/voice[v2]")
    files = [named("G_100.pth", hidden), named("D_100.pth", hidden)]
    assert LAYOUT.pick(files) == {}
    assert "glob metacharacters" in (LAYOUT.unseen(files[0]) or "")
    assert LAYOUT.unseen(named("G_100.pth", Path("/srv/vits[1]/logs/ljs"))) is None  # not what it globs


def test_a_model_name_that_globs_other_directories_too_is_never_trusted() -> None:
    # ./logs/voice*/G_*.pth matches its own files and those of ./logs/voice2 alike: which
    # the trainer takes depends on files the plan does not look at.
    wide = Path("/srv/vits/logs/voice*")
    files = [named("G_100.pth", wide), named("D_100.pth", wide)]
    assert LAYOUT.pick(files) == {}
    assert "every other directory it matches" in (LAYOUT.unseen(files[0]) or "")


def test_pick_sorts_by_the_digits_of_the_path_the_trainer_globs_not_of_where_it_lives() -> None:
    # ./logs/ljs_base has no digit: int("04") < int("5"). ./logs/vctk2 has one: "204" > "25".
    assert LAYOUT.pick([named("G_04.pth"), named("G_5.pth")])["G"].path.name == "G_5.pth"
    vctk2 = Path("/srv/vits/logs/vctk2")
    assert LAYOUT.pick([named("G_04.pth", vctk2), named("G_5.pth", vctk2)])["G"].path.name == "G_04.pth"
    # A digit-less name in a digit-less ./logs/<model>: int("") raises, the bare except
    # swallows it and VITS starts over. Not so under ./logs/vctk2: it just sorts lowest.
    best = named("G_best.pth")
    with pytest.raises(RuleFails) as failure:
        LAYOUT.pick([named("G_1000.pth"), best, named("D_1000.pth")])
    assert failure.value.culprits == (best,)
    assert (
        LAYOUT.pick([named("G_1000.pth", vctk2), named("G_best.pth", vctk2)])["G"].path.name == "G_1000.pth"
    )


# --- the planner on realistic directories -----------------------------------------------


def ok(name: str, epoch: int, directory: Path = EXP) -> Candidate:
    return Candidate(with_content_step(named(name, directory), epoch), Status.OK)


def bad(name: str, reason: str = "torn") -> Candidate:
    return Candidate(named(name), Status.REJECTED, reason)


def pair(number: int, epoch: int) -> list[Candidate]:
    return [ok(f"G_{number}.pth", epoch), ok(f"D_{number}.pth", epoch)]


@pytest.mark.parametrize("d_1000", ["torn", "missing"])
def test_plan_a_crash_between_the_G_and_D_saves_resumes_from_the_pair_before(d_1000: str) -> None:
    files = [*pair(800, 8), *pair(900, 9), ok("G_1000.pth", 10)]
    if d_1000 == "torn":
        files.append(bad("D_1000.pth"))
    the_plan = plan(LAYOUT, files)
    assert the_plan.ok
    assert the_plan.target_step == 9
    assert the_plan.lands_on == {"G": EXP / "G_900.pth", "D": EXP / "D_900.pth"}
    moved = [m.path.name for m in the_plan.moves]
    assert moved == (["D_1000.pth", "G_1000.pth"] if d_1000 == "torn" else ["G_1000.pth"])
    assert "not part of the newest complete verified state" in the_plan.moves[-1].reason


def test_plan_pairs_the_saves_of_one_epoch_by_their_number() -> None:
    # Two saves in epoch 3; the second one's D is torn: its G must not be paired with
    # the first save's D (they are not one state).
    files = [*pair(600, 3), ok("G_700.pth", 3), bad("D_700.pth")]
    the_plan = plan(LAYOUT, files)
    assert the_plan.ok
    assert the_plan.target == {"G": EXP / "G_600.pth", "D": EXP / "D_600.pth"}
    assert sorted(m.path.name for m in the_plan.moves) == ["D_700.pth", "G_700.pth"]


def test_plan_relaunched_on_another_gpu_count_orders_by_epoch_not_by_number() -> None:
    """len(train_loader) halved on relaunch: epochs 8 and 9 were saved under lower
    numbers than epoch 7's. The trainer's digit sort would pick epoch 7: moved aside."""
    files = [*pair(5000, 5), *pair(7000, 7), *pair(4000, 8), *pair(4500, 9)]
    the_plan = plan(LAYOUT, files)
    assert the_plan.ok
    assert (the_plan.target_step, the_plan.lands_on["G"].name) == (9, "G_4500.pth")
    assert sorted(m.path.name for m in the_plan.moves) == [
        "D_5000.pth",
        "D_7000.pth",
        "G_5000.pth",
        "G_7000.pth",
    ]
    assert all("not part of the newest complete verified state" in m.reason for m in the_plan.moves)


def test_plan_a_nan_pair_is_moved_aside() -> None:
    nan = "non-finite values (nan) in model.weight"
    the_plan = plan(LAYOUT, [*pair(800, 8), bad("G_900.pth", nan), bad("D_900.pth", nan)])
    assert (the_plan.ok, the_plan.target_step) == (True, 8)
    assert sorted(m.path.name for m in the_plan.moves) == ["D_900.pth", "G_900.pth"]


def test_plan_moves_a_digitless_name_the_trainer_would_choke_on() -> None:
    the_plan = plan(LAYOUT, [*pair(800, 8), ok("G_latest.pth", 9)])
    assert (the_plan.ok, the_plan.target_step) == (True, 8)
    (move,) = the_plan.moves
    assert move.path.name == "G_latest.pth"
    assert "int('') raises" in move.reason


# --- output lines ------------------------------------------------------------------------


def said(line: str) -> list[tuple[Said, int | None, int | None, str | None]]:
    return [(r.said, r.step, r.epoch, r.path) for r in read_line(ADAPTER.lines, line)]


def test_progress_and_loaded_lines() -> None:
    assert said("INFO:ljs_base:Train Epoch: 3 [42%]") == [(Said.PROGRESS, None, 3, None)]
    assert said("2021-06-14 10:00:00,123\tljs_base\tINFO\tTrain Epoch: 3 [42%]") == [
        (Said.PROGRESS, None, 3, None)
    ]
    assert said("INFO:ljs_base:====> Epoch: 3") == [(Said.PROGRESS, None, 3, None)]
    saving = "INFO:ljs_base:Saving model and optimizer state at iteration 3 to ./logs/ljs_base/G_4000.pth"
    assert said(saving) == [(Said.PROGRESS, None, 3, None), (Said.SAVED, None, None, None)]
    path = "./logs/ljs_base/G_4000.pth"
    assert said(f"INFO:ljs_base:Loaded checkpoint '{path}' (iteration 3)") == [(Said.LOADED, None, 3, path)]
    assert said(f"INFO:root:Loaded checkpoint '{path}' (iteration 3)") == [(Said.LOADED, None, 3, path)]
    # The printed path before it, the config dump, and what a fresh start looks like: no readings
    # that claim more than they know (a resume from an epoch-1 checkpoint prints the same).
    config = "INFO:ljs_base:{'train': {'log_interval': 200, 'betas': [0.8, 0.99], 'eps': 1e-09}, 'model_dir': './logs/ljs_base'}"
    for line in (path, config, "INFO:ljs_base:emb_g.weight is not in the checkpoint"):
        assert said(line) == []
    assert [s for s, *_ in said("INFO:ljs_base:Train Epoch: 1 [0%]")] == [Said.PROGRESS]


@pytest.mark.parametrize(
    ("text", "finite"),
    [
        ("2.61, 2.13, 5.9, 21.7, 1.38, 1.52", True),
        ("2.6134049892425537, 2.1, 5.960464477539063e-08, 21.7, 1.38, 1e+16", True),
        ("nan, nan, nan, nan, nan, nan", False),
        ("2.61, inf, 5.9, -inf, 1.38, 1.52", False),
    ],
)
def test_the_loss_list(text: str, finite: bool) -> None:
    (reading,) = read_line(ADAPTER.lines, f"INFO:ljs_base:[{text}, 4200, 0.00019995000624921886]")
    assert (reading.said, reading.step) == (Said.LOSS, 4200)
    assert len(reading.losses) == 6
    assert reading.nonfinite is not finite


@pytest.mark.parametrize(
    ("line", "explains"),
    [
        ("ValueError: port must have value from 0 to 65535 but was 80000.", "MASTER_PORT"),
        ("AssertionError: CPU training is not allowed.", "CUDA"),
        ("RuntimeError: Distributed package doesn't have NCCL built in", "gloo"),
        ("ModuleNotFoundError: No module named 'monotonic_align.monotonic_align'", "build_ext"),
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


# --- command line, recognise -------------------------------------------------------------


def test_the_checkpoint_directory_from_the_command() -> None:
    assert ADAPTER.launch is not None
    assert ADAPTER.launch.checkpoint_dir is not None
    find = ADAPTER.launch.checkpoint_dir
    assert find(ADAPTER.launch.example.split()) == "logs/ljs_base"
    assert find(["python", "train_ms.py", "-c", "configs/vctk_base.json", "--model", "vctk"]) == "logs/vctk"
    assert find(["python", "train.py", "--model=ljs2", "-c", "configs/ljs_base.json"]) == "logs/ljs2"
    assert find(["python", "train.py", "-c", "configs/ljs_base.json"]) is None
    assert ADAPTER.args == ()


def test_recognises_vits_checkpoints_by_name_and_directory(tmp_path: Path) -> None:
    assert ADAPTER.recognise is not None
    exp = tmp_path / "vits" / "logs" / "ljs_base"
    exp.mkdir(parents=True)
    (exp / "train.log").write_text("")
    assert ADAPTER.recognise(exp / "G_4000.pth")
    assert ADAPTER.recognise(exp / "D_0.pth")
    assert trainer_adapters.detect(exp / "G_4000.pth") is ADAPTER
    for name in ("G_best.pth", "pretrained_ljs.pth", "config.json"):
        assert not ADAPTER.recognise(exp / name)
    # Applio keeps the same names in logs/<model>/, with its own files there, or its sentinel.
    applio = tmp_path / "Applio" / "logs" / "voice"
    (applio / "sliced_audios").mkdir(parents=True)
    assert not ADAPTER.recognise(applio / "G_600.pth")
    assert not ADAPTER.recognise(exp / "G_2333333.pth")
    assert trainer_adapters.detect(applio / "G_600.pth") is trainer_adapters.get("applio")
    sovits = tmp_path / "GPT-SoVITS" / "logs" / "exp" / "logs_s2_v2Pro"
    for path in (sovits / "G_233333333333.pth", sovits / "G_600.pth", exp / "sub" / "G_10.pth"):
        assert not ADAPTER.recognise(path)


ARGV = twin_command("vits_twin.py", "-c", "configs/ljs_base.json", "-m", "ljs_base")


def supervise(tmp_path: Path, root: Path, **restart: Any) -> Path:
    return write_config(
        tmp_path, adapter="vits", command=ARGV, cwd=root, checkpoint_dir="logs/ljs_base", restart=restart
    )


def run_alone(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(ARGV, cwd=root, capture_output=True, text=True, timeout=scaled(120), check=False)


@pytest.mark.slow
def test_left_alone_vits_silently_starts_over_when_D_was_torn_after_G(tmp_path: Path) -> None:
    """The control experiment: G_30 loads, D_30 does not, and the bare except starts the
    run over at epoch 1, step 0, without a word (keeping G_30's weights)."""
    root = vits_root(tmp_path, step_s=0.002)
    write_faults(root, [{"at": "D_30", "kind": "torn"}])
    assert run_alone(root).returncode == -9
    again = run_alone(root).stdout.splitlines()
    assert loaded(again) == [f"Loaded checkpoint '{MODEL_DIR}/G_30.pth' (iteration 2)"]
    assert again[again.index(f"{MODEL_DIR}/D_30.pth") + 1] == "INFO:ljs_base:Train Epoch: 1 [0%]"
    losses = read_line(ADAPTER.lines, again[again.index(f"{MODEL_DIR}/D_30.pth") + 2])
    assert [(r.said, r.step) for r in losses] == [(Said.LOSS, 0)]


@pytest.mark.parametrize("fault", ["torn", "sigkill"])
@pytest.mark.slow
def test_a_crash_between_the_G_and_D_saves_resumes_from_the_pair_before(tmp_path: Path, fault: str) -> None:
    root = vits_root(tmp_path)
    write_faults(root, [{"at": "D_30", "kind": fault}])
    config = supervise(tmp_path, root)
    result = run_cli("run", "-c", str(config))
    assert result.returncode == 0, result.stdout[-3000:]
    lines = trainer_output(tmp_path)
    assert loaded(lines) == [
        f"Loaded checkpoint '{MODEL_DIR}/G_20.pth' (iteration 2)",
        f"Loaded checkpoint '{MODEL_DIR}/D_20.pth' (iteration 2)",
    ]
    # One fresh start (the first attempt's): the relaunch repeats epoch 2 from step 20.
    assert lines.count("INFO:ljs_base:Train Epoch: 1 [0%]") == 1
    assert lines.count("INFO:ljs_base:Train Epoch: 2 [0%]") == 2
    assert quarantined(tmp_path) == (["D_30.pth", "G_30.pth"] if fault == "torn" else ["G_30.pth"])
    data = status(config)
    assert data["state"] == "completed"
    assert [a["cause"] for a in data["attempts"]] == ["crash", "completed"]
    assert data["last_plan"]["summary"].startswith("resume from epoch 2 (G_20.pth, D_20.pth); move aside")


@pytest.mark.slow
def test_a_nan_pair_is_moved_aside(tmp_path: Path) -> None:
    root = vits_root(tmp_path)
    write_faults(root, [{"at": 35, "kind": "nan"}, {"at": 42, "kind": "exception"}])
    config = supervise(tmp_path, root)
    result = run_cli("run", "-c", str(config))
    assert result.returncode == 0, result.stdout[-3000:]
    lines = trainer_output(tmp_path)
    assert loaded(lines) == [
        f"Loaded checkpoint '{MODEL_DIR}/G_30.pth' (iteration 2)",
        f"Loaded checkpoint '{MODEL_DIR}/D_30.pth' (iteration 2)",
    ]
    nan_losses = [
        r for line in lines for r in read_line(ADAPTER.lines, line) if r.said is Said.LOSS and r.nonfinite
    ]
    assert [r.step for r in nan_losses] == [35, 40]
    assert quarantined(tmp_path) == ["D_40.pth", "G_40.pth"]
    note = json.loads(next((tmp_path / "state" / "quarantine").glob("*/G_40.pth.json")).read_text())
    assert "nan" in note["reason"].lower()
    assert status(config)["state"] == "completed"


@pytest.mark.slow
def test_the_hard_coded_port_ends_the_run_at_once(tmp_path: Path) -> None:
    root = vits_root(tmp_path)
    write_faults(
        root, [{"at": 0, "kind": "say:ValueError: port must have value from 0 to 65535 but was 80000."}]
    )
    config = supervise(tmp_path, root)
    result = run_cli("run", "-c", str(config))
    assert result.returncode == 3, result.stdout[-3000:]
    data = status(config)
    assert [a["cause"] for a in data["attempts"]] == ["not-retryable"]
    assert "hard-codes MASTER_PORT='80000'" in json.dumps(data)


# --- verify ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def verified(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """`verify --adapter vits --json` on what the twin wrote (G/D_0 ... G/D_30), on
    damaged files and on a pretrained model: one result per file name."""
    root = vits_root(tmp_path_factory.mktemp("verify"), epochs=2, step_s=0.0)
    assert run_alone(root).returncode == 0
    exp = root / "logs" / "ljs_base"
    good: dict[str, Any] = torch.load(exp / "G_30.pth", weights_only=True)
    data = (exp / "D_30.pth").read_bytes()
    (exp / "D_40.pth").write_bytes(data[: len(data) // 2])
    nan_model = {k: torch.full_like(v, math.nan) for k, v in good["model"].items()}
    torch.save({**good, "model": nan_model}, exp / "G_40.pth")
    torch.save({k: v for k, v in good.items() if k != "optimizer"}, exp / "G_50.pth")
    torch.save({**good, "iteration": "two"}, exp / "G_60.pth")
    (exp / "G_70.pth").write_bytes(b"")
    pretrained = {"model": good["model"], "iteration": 1000, "optimizer": None, "learning_rate": 2e-4}
    torch.save(pretrained, exp / "pretrained_ljs.pth")
    names = ["G_0.pth", "D_0.pth", "G_20.pth", "D_30.pth", "pretrained_ljs.pth"]
    names += ["D_40.pth", "G_40.pth", "G_50.pth", "G_60.pth", "G_70.pth"]
    result = run_cli("verify", "--adapter", "vits", "--json", *(str(exp / n) for n in names))
    assert result.returncode == 1, result.stderr
    return {Path(r["path"]).name: r for r in map(json.loads, result.stdout.splitlines())}


@pytest.mark.slow
def test_verify_good_files_step_from_the_name_epoch_from_the_content(
    verified: dict[str, dict[str, Any]],
) -> None:
    results = [verified[n] for n in ("G_0.pth", "D_0.pth", "G_20.pth", "D_30.pth")]
    assert [(r["ok"], r["step"], r["epoch"]) for r in results] == [
        (True, 0, 1),
        (True, 0, 1),
        (True, 20, 2),
        (True, 30, 2),
    ]


def test_verify_says_a_pretrained_model_is_not_a_resume_point(verified: dict[str, dict[str, Any]]) -> None:
    result = verified["pretrained_ljs.pth"]
    assert result["ok"] is False
    assert "not a resume checkpoint" in result["reason"]
    assert "released pretrained VITS model" in result["reason"]


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("D_40.pth", "zip"),
        ("G_40.pth", "nan"),
        ("G_50.pth", "missing key: optimizer"),
        ("G_60.pth", "not a whole number"),
        ("G_70.pth", "empty"),
    ],
)
def test_verify_rejects_damage(verified: dict[str, dict[str, Any]], name: str, reason: str) -> None:
    result = verified[name]
    assert result["ok"] is False
    assert reason in result["reason"].lower(), result["reason"]


@pytest.mark.slow
def test_verify_without_an_adapter_recognises_the_trainer_from_name_and_directory(tmp_path: Path) -> None:
    state = {"model": {"w": torch.ones(2)}, "iteration": 3, "optimizer": {}, "learning_rate": 2e-4}
    vits = tmp_path / "vits" / "logs" / "ljs"
    applio = tmp_path / "applio" / "logs" / "voice"
    for directory in (vits, applio):
        directory.mkdir(parents=True)
    torch.save(state, vits / "G_3000.pth")
    torch.save({**state, "scaler": {}}, applio / "G_2333333.pth")  # Applio's sentinel
    result = run_cli("verify", "--json", str(vits / "G_3000.pth"), str(applio / "G_2333333.pth"))
    assert result.returncode == 0, result.stdout + result.stderr
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    # `step` is the trainer's own (a sentinel name has none); both resume by epoch.
    assert (first["ok"], first["step"], first["epoch"], first["resume_unit"]) == (True, 3000, 3, "epoch")
    assert (second["ok"], second["step"], second["epoch"], second["resume_unit"]) == (True, None, 3, "epoch")
    # A G_<n>.pth beside nothing that tells VITS from Applio, outside logs/: no guess.
    (tmp_path / "loose").mkdir()
    torch.save(state, tmp_path / "loose" / "G_10.pth")
    unknown = run_cli("verify", str(tmp_path / "loose" / "G_10.pth"))
    assert unknown.returncode == 2
    assert "cannot tell which trainer wrote" in unknown.stderr


@pytest.mark.slow
def test_relaunched_with_fewer_batches_an_epoch_it_resumes_the_newest_epoch_not_the_highest_number(
    tmp_path: Path,
) -> None:
    """First 20 batches an epoch (G_0 ... G_50 for epochs 1-3), then the data loader gets
    shorter (more GPUs, a bigger batch): 5 an epoch. VITS resumes epoch 3 at global step
    10, so epochs 3 and 5 are saved as G_10 and G_20, over the old files of those names,
    and a crash in epoch 6 follows. Left alone, its digit sort would resume G_50 (epoch 3);
    the supervisor resumes epoch 5, moving aside what outnumbers it, and keeps a verified
    copy of the newer G_20, not the overwritten one."""
    root = vits_root(tmp_path, epochs=3)
    assert run_alone(root).returncode == 0
    config_file = root / "configs" / "ljs_base.json"
    hps = json.loads(config_file.read_text())
    hps["twin"]["batches_per_epoch"] = 5
    hps["train"]["epochs"] = 7
    config_file.write_text(json.dumps(hps))
    write_faults(root, [{"at": 27, "kind": "exception"}])  # in epoch 6
    config = supervise(tmp_path, root)
    result = run_cli("run", "-c", str(config))
    assert result.returncode == 0, result.stdout[-3000:]
    assert [a["cause"] for a in status(config)["attempts"]] == ["crash", "completed"]
    assert loaded(trainer_output(tmp_path))[-2:] == [
        f"Loaded checkpoint '{MODEL_DIR}/G_20.pth' (iteration 5)",
        f"Loaded checkpoint '{MODEL_DIR}/D_20.pth' (iteration 5)",
    ]
    assert quarantined(tmp_path) == ["D_30.pth", "D_40.pth", "D_50.pth", "G_30.pth", "G_40.pth", "G_50.pth"]
    # The relaunch re-saved G_20 in epoch 5 once more: the copy kept is that newest version.
    newest_g20 = tmp_path / "state" / "verified" / "step-5" / "G" / "G_20.pth"
    assert newest_g20.read_bytes() == (root / "logs" / "ljs_base" / "G_20.pth").read_bytes()


@pytest.mark.slow
def test_a_checkpoint_of_another_model_shape_is_rejected_unless_the_change_is_accepted(
    tmp_path: Path,
) -> None:
    """VITS loads with mis-shaped keys skipped: a file of another model version would
    verify, then resume a partly untrained model. Its keys and shapes are compared with
    the run's newest verified file of its role."""
    root = vits_root(tmp_path, epochs=2)
    config = supervise(tmp_path, root)
    assert run_cli("run", "-c", str(config)).returncode == 0
    model_dir = root / "logs" / "ljs_base"
    for role in "GD":
        state: dict[str, Any] = torch.load(model_dir / f"{role}_30.pth", weights_only=True)
        wider = {"weight": torch.zeros(3, 2), "bias": torch.zeros(3), "extra.weight": torch.zeros(1)}
        torch.save({**state, "model": wider, "iteration": 3}, model_dir / f"{role}_100.pth")
    planned = run_cli("plan", "-c", str(config), "--apply", "--json")
    assert planned.returncode == 0, planned.stdout + planned.stderr
    moves = json.loads(planned.stdout)["moves"]
    assert sorted(Path(m["path"]).name for m in moves) == ["D_100.pth", "G_100.pth"]
    reason = next(m["reason"] for m in moves if m["path"].endswith("G_100.pth"))
    assert "the model's keys or shapes differ from G_30.pth" in reason
    assert "weight [2, 2] -> [3, 2]" in reason
    assert "1 new key(s): extra.weight" in reason
    assert "--accept-model-change" in reason
    for moved in (tmp_path / "state").glob("quarantine/*/*_100.pth"):
        moved.rename(model_dir / moved.name)  # put back, on purpose this time
    prepared = run_cli("plan", "-c", str(config), "--apply", "--json", "--accept-model-change")
    assert prepared.returncode == 0, prepared.stdout + prepared.stderr
    assert json.loads(prepared.stdout)["moves"] == []
    # The accepted files are the run's model now: no flag needed to run on from them.
    accepted = run_cli("run", "-c", str(config), "--again")
    # Accepted, they are the state to resume from. (This twin's model cannot load them: it
    # starts over, which the supervisor catches as a silent reset, twice, and gives up.)
    assert accepted.returncode == 3, accepted.stdout[-2000:]
    data = status(config)
    assert data["last_plan"]["summary"].startswith("resume from epoch 3 (G_100.pth, D_100.pth)")
    assert [a["cause"] for a in data["attempts"]][1:] == ["silent-reset", "silent-reset"]
