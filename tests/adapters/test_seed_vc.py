"""The `seed-vc` adapter: its model of Seed-VC's resume rule (V1 train.py, V2 train_v2.py),
its readings of their output, and end to end with the real CLI around the layout twin
(tests/support/trainers/seed_vc_twin.py), including what a relaunch costs when the trainer counts
its steps from 0 again."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Any

import pydantic
import pytest
import torch

import trainer_adapters
from supervisor.checkpoints.plan import Candidate, Snapshot, Status, plan
from tests.support.load import scaled
from tests.support.twins import run_cli, status, trainer_output, twin_command, write_config, write_faults
from trainer_adapters.base import NamedCheckpoint, RuleFails, Said
from trainer_adapters.rules import arg_problems, read_line

ADAPTER = trainer_adapters.get("seed-vc")
V1 = ADAPTER.layout(ADAPTER.options())
V2 = ADAPTER.layout(ADAPTER.options(version=2))
V2_AR = ADAPTER.layout(ADAPTER.options(version=2, train_ar=True))
# Underscores and digits in the directory: Seed-VC's key reads only after the last "_".
RUN = Path("/srv/seed-vc/runs/voice_2024_1")


# --- names, and the trainer's choice ---------------------------------------------------


def named(name: str, directory: Path = RUN, layout: Any = V1) -> NamedCheckpoint:
    found = layout.parse(directory / name)
    assert found is not None, name
    return found


def test_names_the_trainers_glob_and_what_they_count() -> None:
    dit = named("DiT_epoch_00007_step_00880.pth")
    assert (dit.role, dit.step, dit.epoch, dit.in_place, dit.content_step) == ("DiT", 880, 7, False, False)
    assert (named("CFM_epoch_00001_step_00500.pth").role, named("AR_epoch_00001_step_00500.pth").role) == (
        "CFM",
        "AR",
    )
    # Every kind whatever the version, so that `verify` can judge any Seed-VC file.
    assert V2.parse(RUN / "DiT_epoch_00007_step_00880.pth") == dit
    expect = V1.expect(dit)
    assert expect.required_keys == ("net.cfm", "net.length_regulator")
    assert (expect.step_key, expect.epoch_key) == ("iters", "epoch")
    assert V2_AR.expect(named("AR_epoch_00001_step_00500.pth")).required_keys == (
        "net.ar",
        "net.length_regulator",
    )
    assert (V1.roles, V2.roles, V2_AR.roles, V1.recursive) == (("DiT",), ("CFM",), ("CFM", "AR"), False)
    ar_only = ADAPTER.layout(ADAPTER.options(version=2, train_cfm=False, train_ar=True))
    assert ar_only.roles == ("AR",)


def test_the_step_is_the_trainers_own_key_int_of_the_text_after_the_last_underscore() -> None:
    # The glob's `*` takes anything: a copy named .bak.pth still counts as step 10.
    bak = named("DiT_epoch_00001_step_00010.bak.pth")
    assert (bak.step, bak.epoch) == (10, None)
    assert named("DiT_epoch_1_step_final.pth").step is None
    # V1 prunes by sorting DiT_epoch_*.pth: a name there it cannot sort crashes its next save.
    assert named("DiT_epoch_best.pth").step is None
    # A numbered stray there is no resume point, but V1's keep-2 pruning counts it.
    stray = V1.parse(RUN / "DiT_epoch_00003.pth")
    assert stray is not None
    assert "pruning" in (stray.interferes or "")
    assert V2.parse(RUN / "DiT_epoch_00003.pth") is None, "V2 never looks at DiT files"
    for other in ("CFM_epoch_best.pth", "dit_epoch_00001_step_00010.pth", "G_100.pth", "model_100.pt"):
        assert V1.parse(RUN / other) is None, other
    for other in ("config_dit_mel_seed_uvit_xlsr_tiny.yml", "vc_wrapper.yaml", "faults.json"):
        assert (V1.parse(RUN / other), V1.ignored(RUN / other)) == (None, None)
    assert V1.parse(RUN / "ft_model.pth") is None
    assert "final model" in (V1.ignored(RUN / "ft_model.pth") or "")


def test_pick_is_the_highest_step_whatever_the_epoch() -> None:
    files = [named(n) for n in ("DiT_epoch_00011_step_00500.pth", "DiT_epoch_00007_step_00900.pth")]
    assert V1.pick(files)["DiT"].path.name == "DiT_epoch_00007_step_00900.pth"
    assert V1.pick([]) == {}
    # V1 ignores CFM files; V2 takes CFM and AR each on its own, and loads an AR file even
    # when it does not train it (the plan lists it, beside the state it resumes).
    cfm, ar = named("CFM_epoch_00001_step_00010.pth"), named("AR_epoch_00003_step_00020.pth")
    assert V1.pick([cfm, ar]) == {}
    assert V2.pick([cfm, ar]) == {"CFM": cfm, "AR": ar}
    assert V2_AR.pick([cfm, ar]) == {"CFM": cfm, "AR": ar}


def test_pick_fails_where_the_trainers_int_raises() -> None:
    final = named("DiT_epoch_1_step_final.pth")
    with pytest.raises(RuleFails) as failure:
        V1.pick([named("DiT_epoch_00004_step_00030.pth"), final])
    assert failure.value.culprits == (final,)
    assert "int(the text after the last '_')" in failure.value.why
    with pytest.raises(RuleFails):
        V1.pick([named("DiT_epoch_best.pth")])
    # V2 globs AR files at start even when it trains the CFM only; V1 never looks at them.
    odd_ar = named("AR_epoch_1_step_x.pth")
    with pytest.raises(RuleFails):
        V2.pick([named("CFM_epoch_00001_step_00010.pth"), odd_ar])
    assert V1.pick([odd_ar]) == {}


def test_a_tie_at_the_top_step_goes_to_the_first_listed_as_with_max() -> None:
    # Two launches saved step 30 (counters restart at every launch): max() keeps the
    # first of them in os.listdir order.
    first, second = named("DiT_epoch_00004_step_00030.pth"), named("DiT_epoch_00007_step_00030.pth")
    assert V1.pick([second, first, named("DiT_epoch_00003_step_00020.pth")]) == {"DiT": second}
    assert V1.pick([first, second]) == {"DiT": first}


def test_of_tied_files_an_unverified_one_listed_first_makes_way() -> None:
    verified = Candidate(named("DiT_epoch_00001_step_00500.pth"), Status.OK)
    unverified = Candidate(named("DiT_epoch_00000_step_00500.pth"), Status.UNVERIFIED)
    result = plan(V1, [unverified, verified])
    assert result.ok, result.problem
    assert [m.path.name for m in result.moves] == ["DiT_epoch_00000_step_00500.pth"]
    assert result.lands_on == {"DiT": verified.ckpt.path}
    assert plan(V1, [verified, unverified]).moves == [], "the trainer takes the verified one anyway"


def test_options() -> None:
    for bad in ({"version": 3}, {"train_ar": True}, {"version": 2, "train_cfm": False}, {"keep": 2}):
        with pytest.raises(pydantic.ValidationError):
            ADAPTER.options(**bad)


def test_the_relaunch_warning() -> None:
    assert V1.relaunch_warning(None) is None
    v1 = V1.relaunch_warning(30)
    assert v1 is not None
    assert "weights of step 30" in v1
    assert "keep-2 pruning" in v1
    assert "counts from 0 again" in v1
    assert "deletes every save below step 30" in V2.relaunch_warning(30)


# --- the planner on realistic directories -----------------------------------------------


def ok(name: str) -> Candidate:
    return Candidate(named(name), Status.OK)


def bad(name: str, reason: str = "truncated: no zip central directory") -> Candidate:
    return Candidate(named(name), Status.REJECTED, reason)


def test_plan_v1_a_torn_newest_file_sends_the_trainer_to_the_one_before() -> None:
    files = [ok("DiT_epoch_00001_step_00010.pth"), ok("DiT_epoch_00003_step_00020.pth")]
    the_plan = plan(V1, [*files, bad("DiT_epoch_00004_step_00030.pth")])
    assert (the_plan.ok, the_plan.target_step) == (True, 20)
    assert the_plan.lands_on == {"DiT": RUN / "DiT_epoch_00003_step_00020.pth"}
    assert [m.path.name for m in the_plan.moves] == ["DiT_epoch_00004_step_00030.pth"]


def test_plan_v2_a_torn_new_cfm_is_moved_before_the_trainer_deletes_the_good_one() -> None:
    the_plan = plan(V2, [ok("CFM_epoch_00001_step_00010.pth"), bad("CFM_epoch_00003_step_00020.pth")])
    assert (the_plan.ok, the_plan.target_step) == (True, 10)
    assert [m.path.name for m in the_plan.moves] == ["CFM_epoch_00003_step_00020.pth"]


def test_plan_v2_with_ar_a_crash_between_the_ar_and_cfm_saves(tmp_path: Path) -> None:
    # AR_20 was written (and keep-1 pruning deleted AR_10), then CFM_20 was torn.
    copy = tmp_path / "verified" / "step-10" / "AR" / "AR_epoch_00001_step_00010.pth"
    snap = Snapshot("AR", 10, RUN / "AR_epoch_00001_step_00010.pth", copy)
    files = [ok("AR_epoch_00003_step_00020.pth"), ok("CFM_epoch_00001_step_00010.pth")]
    the_plan = plan(V2_AR, [*files, bad("CFM_epoch_00003_step_00020.pth")], [snap])
    assert (the_plan.ok, the_plan.target_step) == (True, 10)
    assert [(r.copy, r.path) for r in the_plan.restores] == [(copy, snap.original)]
    assert sorted(m.path.name for m in the_plan.moves) == [
        "AR_epoch_00003_step_00020.pth",
        "CFM_epoch_00003_step_00020.pth",
    ]


def test_plan_after_a_relaunch_goes_by_step_like_the_trainer_not_by_age() -> None:
    # The first launch left step 30; the relaunch (counting from 0 again) saved step 20 on
    # top of the weights of step 30, and crashed. Its file holds more training, but the
    # trainer resumes by step, so the plan does too: the relaunch's work is not resumed.
    files = [ok("DiT_epoch_00003_step_00020.pth"), ok("DiT_epoch_00004_step_00030.pth")]
    the_plan = plan(V1, files)
    assert (the_plan.ok, the_plan.target_step, the_plan.moves) == (True, 30, [])


def test_plan_a_tie_goes_to_the_newer_launchs_save() -> None:
    """Both launches saved step 30; the second trained on top of the first's weights: its
    file (the one written later) is the newer state, whatever the epochs in the names."""
    older = Candidate(named("DiT_epoch_00007_step_00030.pth"), Status.OK, written_ns=1_000)
    newer = Candidate(named("DiT_epoch_00004_step_00030.pth"), Status.OK, written_ns=2_000)
    for listed in ([older, newer], [newer, older]):
        the_plan = plan(V1, listed)
        assert the_plan.ok, the_plan.problem
        assert the_plan.lands_on == {"DiT": newer.ckpt.path}
    (move,) = plan(V1, [older, newer]).moves  # listed first, max() would take it
    assert move.path.name == "DiT_epoch_00007_step_00030.pth"
    assert "not part of the newest complete verified state" in move.reason
    assert plan(V1, [newer, older]).moves == []


def test_plan_says_what_the_trainer_deletes_at_start_and_lists_the_ar_file_v2_loads() -> None:
    v1 = plan(V1, [ok(f"DiT_epoch_0000{n}_step_000{n}0.pth") for n in (1, 2, 3)])
    assert [p.name for p in v1.trainer_deletes] == ["DiT_epoch_00001_step_00010.pth"]
    assert "deletes DiT_epoch_00001_step_00010.pth when it starts" in v1.summary()
    v2 = plan(V2, [ok("CFM_epoch_00001_step_00010.pth"), ok("AR_epoch_00001_step_00010.pth")])
    assert v2.ok
    assert v2.also_loads == {"AR": RUN / "AR_epoch_00001_step_00010.pth"}
    assert "also loads AR_epoch_00001_step_00010.pth" in v2.summary()
    torn_ar = plan(V2, [ok("CFM_epoch_00001_step_00010.pth"), bad("AR_epoch_00001_step_00010.pth")])
    assert [m.path.name for m in torn_ar.moves] == ["AR_epoch_00001_step_00010.pth"], "it would crash on it"


def test_plan_a_stray_numbered_name_in_v1s_pruning_glob_is_moved_aside() -> None:
    stray = Candidate(named("DiT_epoch_00099.pth"), Status.UNVERIFIED)
    the_plan = plan(V1, [ok("DiT_epoch_00003_step_00020.pth"), stray])
    assert the_plan.ok
    assert the_plan.target_step == 20
    (move,) = the_plan.moves
    assert move.path.name == "DiT_epoch_00099.pth"
    assert "pruning" in move.reason


def test_plan_a_run_name_with_glob_metacharacters_is_refused_not_promised() -> None:
    hidden = Path("/srv/seed-vc/runs/voice[v2]")
    the_plan = plan(V1, [Candidate(named("DiT_epoch_00003_step_01000.pth", hidden), Status.OK)])
    assert not the_plan.ok
    assert the_plan.lands_on == {}
    assert "glob metacharacters" in (the_plan.problem or "")


def test_plan_moves_a_name_the_trainers_sort_chokes_on() -> None:
    the_plan = plan(V1, [ok("DiT_epoch_00003_step_00020.pth"), ok("DiT_epoch_00003_step_best.pth")])
    assert (the_plan.ok, the_plan.target_step) == (True, 20)
    (move,) = the_plan.moves
    assert move.path.name == "DiT_epoch_00003_step_best.pth"
    assert "raises on this name" in move.reason


# --- output lines ------------------------------------------------------------------------


def said(line: str) -> list[tuple[Said, int | None, int | None, str | None]]:
    return [(r.said, r.step, r.epoch, r.path) for r in read_line(ADAPTER.lines, line)]


@pytest.mark.parametrize(
    ("loss", "value"),
    [("0.5617808432252893", 0.5617808432252893), ("1e-05", 1e-05), ("nan", math.nan), ("-inf", -math.inf)],
)
def test_v1_progress_and_loss(loss: str, value: float) -> None:
    line = f"epoch 7, step 880, loss: {loss}"
    assert [(s, step, epoch) for s, step, epoch, _ in said(line)] == [
        (Said.PROGRESS, 880, 7),
        (Said.LOSS, 880, 7),
    ]
    (reading,) = [r for r in read_line(ADAPTER.lines, line) if r.said is Said.LOSS]
    assert reading.nonfinite is not math.isfinite(value)
    assert math.isnan(value) or reading.losses == (value,)


@pytest.mark.parametrize(("loss", "finite"), [("0.3251", True), ("nan", False), ("inf", False)])
def test_v2_progress_carries_the_epoch_only(loss: str, finite: bool) -> None:
    # "Iteration" is the batch index within the epoch, not a step.
    line = f"Epoch 3, Iteration 12, Loss: {loss}, Loss AR: 0.0000, Loss CFM: {loss}, Grad Norm: 1.2, LR: 0.000020"
    assert said(line) == [(Said.PROGRESS, None, 3, None), (Said.LOSS, None, 3, None)]
    (reading,) = [r for r in read_line(ADAPTER.lines, line) if r.said is Said.LOSS]
    assert reading.nonfinite is not finite
    assert said("Epoch 3 completed in 41.27 seconds") == [(Said.PROGRESS, None, 3, None)]


def test_loaded_fresh_start_and_completed_lines() -> None:
    ours = r"./runs\test\DiT_epoch_00007_step_00900.pth"  # as issue #195 shows it on Windows
    assert said(f"Loaded checkpoint from {ours}") == [(Said.LOADED, None, None, ours)]
    hf = "./checkpoints/models--Plachta--Seed-VC/snapshots/0a1b/DiT_uvit_tat_xlsr_ema.pth"
    assert said(f"Loaded checkpoint from {hf}") == [(Said.FRESH_START, None, None, None)]
    assert said("Failed to load any checkpoint, training from scratch.") == [
        (Said.FRESH_START, None, None, None)
    ]
    cfm = "runs/voice/CFM_epoch_00001_step_00500.pth"
    assert said(f"Loading CFM checkpoint from {cfm}") == [(Said.LOADED, None, None, cfm)]
    assert said(f"Loading AR checkpoint from {cfm.replace('CFM', 'AR')}")[0][0] is Said.LOADED
    assert said(f"Loading CFM checkpoint from {cfm}...") == []  # the wrapper says it again
    assert said("Final model saved at ./runs/voice/ft_model.pth")[0][0] is Said.COMPLETED
    assert said("Reached max steps, stopping training") == [(Said.COMPLETED, None, None, None)]
    assert said("Reached max epochs, stopping training") == [(Said.COMPLETED, None, None, None)]
    for line in ("Saving..", "Saving checkpoint..."):
        assert said(line) == [(Said.SAVED, None, None, None)], line
    for line in (
        "Saving final model..",
        f"Removed {ours}",
        f"Saved CFM checkpoint to {cfm}",
        "cfm loaded",
    ):
        assert said(line) == [], line


@pytest.mark.parametrize(
    ("line", "explains"),
    [
        ("    assert len(self.data) != 0", "no audio file"),
        ("AssertionError: At least one model should be trained", "--train-cfm"),
        ("ValueError: Unsupported vocoder type: hifigan2", "Seed-VC lacks"),
        ("ValueError: Unsupported speech tokenizer type: hubert", "Seed-VC lacks"),
        (
            "\tsize mismatch for estimator.x_embedder.weight: copying a param with shape torch.Size([512, 80])",
            "another model config",
        ),
    ],
)
def test_fatal_lines_explain_themselves(line: str, explains: str) -> None:
    (reading,) = read_line(ADAPTER.lines, line)
    assert reading.said is Said.FATAL
    assert explains in reading.explain


# --- command line, recognise -------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "refused"),
    [
        ([], None),
        (["--pretrained-ckpt", "runs/old/ft_model.pth"], "--pretrained-ckpt"),
        (["--pretrained-ckpt=False"], "--pretrained-ckpt"),  # a path, not a boolean
        (["--pretrained-cfm-ckpt", "cfm.pth"], "--pretrained-cfm-ckpt"),
        (["--pretrained-ar-ckpt", "ar.pth"], "--pretrained-ar-ckpt"),
    ],
)
def test_pretrained_checkpoints_are_refused(extra: list[str], refused: str | None) -> None:
    argv = ["python", "train.py", "--dataset-dir", "data", "--run-name", "voice", *extra]
    problems = arg_problems(ADAPTER.args, argv)
    assert [p.split(":")[0] for p in problems] == ([refused] if refused else [])
    assert all("every relaunch" in p for p in problems)


def test_the_checkpoint_directory_from_the_command() -> None:
    assert ADAPTER.launch is not None
    assert ADAPTER.launch.checkpoint_dir is not None
    find = ADAPTER.launch.checkpoint_dir
    assert find(ADAPTER.launch.example.split()) == "runs/my_run"
    assert find(["accelerate", "launch", "train_v2.py", "--run-name", "voice", "--train-cfm"]) == "runs/voice"
    assert find(["python", "train.py", "--run-name=voice"]) == "runs/voice"
    assert find(["python", "train.py", "--dataset-dir", "data"]) == "runs/my_run"  # argparse's default
    assert (ADAPTER.exit_codes_trusted, ADAPTER.fp16_loss_scaling) == (True, False)


def test_recognises_seed_vc_checkpoints_by_name_and_directory(tmp_path: Path) -> None:
    assert ADAPTER.recognise is not None
    runs = tmp_path / "seed-vc" / "runs" / "voice"
    for name in (
        "DiT_epoch_00007_step_00880.pth",
        "CFM_epoch_00001_step_00500.pth",
        "AR_epoch_00001_step_00500.pth",
    ):
        assert ADAPTER.recognise(runs / name), name
        assert trainer_adapters.detect(runs / name) is ADAPTER
    # Elsewhere only beside the config the trainer copies into its run directory.
    custom = tmp_path / "exp" / "voice"
    custom.mkdir(parents=True)
    assert not ADAPTER.recognise(custom / "DiT_epoch_00007_step_00880.pth")
    (custom / "config_dit_mel_seed_uvit_whisper_small_wavenet.yml").write_text("log_dir: ./exp\n")
    assert ADAPTER.recognise(custom / "DiT_epoch_00007_step_00880.pth")
    # Not its final model, nor any other trainer's files.
    others = ("ft_model.pth", "DiT_epoch_1_step_final.pth", "G_600.pth", "D_2333333.pth", "model_1000.pt")
    for name in (*others, "model_last.pt", "s2G_e8_s208.pth"):
        assert not ADAPTER.recognise(runs / name), name


# --- end to end with the twin --------------------------------------------------------------

RUN_DIR = "./runs/svc"  # as train.py joins its config's log_dir and --run-name


def seed_vc_root(tmp_path: Path) -> Path:
    root = tmp_path / "seed-vc"
    root.mkdir()
    (root / "config.yml").write_text(json.dumps({"log_dir": "./runs", "log_interval": 5}))
    return root


def argv(*, v2: bool = False, steps: int = 40) -> list[str]:
    common = ["--dataset-dir", "data", "--run-name", "svc", "--batch-size", "2", "--max-steps", str(steps)]
    common += ["--max-epochs", "1000", "--save-every", "10", "--num-workers", "0", "--step-time", "0.005"]
    if v2:
        return twin_command("seed_vc_twin.py", "--v2", *common, "--train-cfm")
    return twin_command("seed_vc_twin.py", "--config", "config.yml", *common)


def supervise(tmp_path: Path, root: Path, *, v2: bool = False, **restart: Any) -> Path:
    options = {"version": 2} if v2 else {}
    return write_config(
        tmp_path,
        adapter="seed-vc",
        command=argv(v2=v2),
        cwd=root,
        checkpoint_dir="runs/svc",
        options=options,
        restart=restart,
    )


def run_alone(root: Path, *, v2: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv(v2=v2), cwd=root, capture_output=True, text=True, timeout=scaled(120), check=False
    )


SAID = ("Loaded checkpoint", "Failed to load", "Removed", "Final model saved", "Loading ", "Reached max")


def trainer_said(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith(SAID)]


def quarantined(tmp_path: Path, root: Path) -> dict[str, str]:
    """Name -> the reason in its note."""
    found = {}
    for path in sorted((tmp_path / "state" / "quarantine").glob("*/*.pth")):
        note = json.loads(path.with_name(path.name + ".json").read_text())
        assert note["original_path"] == str(root / "runs" / "svc" / path.name)
        found[path.name] = note["reason"]
    return found


def files(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "runs" / "svc").glob("*.pth"))


@pytest.mark.slow
def test_left_alone_v1_prunes_the_oldest_file_then_crashes_on_the_torn_newest(tmp_path: Path) -> None:
    """The control experiment: with more than 2 files train.py first deletes the lowest
    step, then loads the highest, torn, and crashes; the torn file stays the highest, so
    every later launch crashes the same way."""
    root = seed_vc_root(tmp_path)
    write_faults(root / "runs" / "svc", [{"at": 30, "kind": "torn"}])
    assert run_alone(root).returncode == -9
    again = run_alone(root)
    assert again.returncode == 1
    assert "failed finding central directory" in again.stderr
    assert trainer_said(again.stdout.splitlines()) == [f"Removed {RUN_DIR}/DiT_epoch_00001_step_00010.pth"]
    assert files(root) == ["DiT_epoch_00003_step_00020.pth", "DiT_epoch_00004_step_00030.pth"]


@pytest.mark.slow
def test_v1_a_torn_newest_file_is_moved_aside_and_the_one_before_is_resumed(tmp_path: Path) -> None:
    root = seed_vc_root(tmp_path)
    write_faults(root / "runs" / "svc", [{"at": 30, "kind": "torn"}])
    config = supervise(tmp_path, root)
    result = run_cli("run", "-c", str(config))
    assert result.returncode == 0, result.stdout[-3000:]
    assert trainer_said(trainer_output(tmp_path)) == [
        "Failed to load any checkpoint, training from scratch.",
        f"Loaded checkpoint from {RUN_DIR}/DiT_epoch_00003_step_00020.pth",
        f"Final model saved at {RUN_DIR}/ft_model.pth",
    ]
    moved = quarantined(tmp_path, root)
    assert list(moved) == ["DiT_epoch_00004_step_00030.pth"]
    assert moved["DiT_epoch_00004_step_00030.pth"].startswith("rejected: truncated")
    data = status(config)
    assert [a["cause"] for a in data["attempts"]] == ["crash", "completed"]
    assert data["last_plan"]["summary"].startswith("resume from step 20 (DiT_epoch_00003_step_00020.pth)")


@pytest.mark.slow
def test_left_alone_v2_deletes_the_good_file_then_crashes_on_the_torn_one(tmp_path: Path) -> None:
    root = seed_vc_root(tmp_path)
    write_faults(root / "runs" / "svc", [{"at": 20, "kind": "torn"}])
    assert run_alone(root, v2=True).returncode == -9
    assert files(root) == ["CFM_epoch_00001_step_00010.pth", "CFM_epoch_00003_step_00020.pth"]
    again = run_alone(root, v2=True)
    assert again.returncode == 1
    assert trainer_said(again.stdout.splitlines())[0] == "Removed runs/svc/CFM_epoch_00001_step_00010.pth"
    assert files(root) == ["CFM_epoch_00003_step_00020.pth"], "only the torn file is left"


@pytest.mark.slow
def test_v2_the_torn_file_is_moved_aside_first_so_the_good_one_survives_and_is_loaded(tmp_path: Path) -> None:
    root = seed_vc_root(tmp_path)
    write_faults(root / "runs" / "svc", [{"at": 20, "kind": "torn"}])
    config = supervise(tmp_path, root, v2=True)
    result = run_cli("run", "-c", str(config))
    assert result.returncode == 0, result.stdout[-3000:]
    good = "runs/svc/CFM_epoch_00001_step_00010.pth"
    assert trainer_said(trainer_output(tmp_path)) == [
        f"Loading CFM checkpoint from {good}",
        f"Loading CFM checkpoint from {good}...",
        "Reached max steps, stopping training",
    ]
    assert list(quarantined(tmp_path, root)) == ["CFM_epoch_00003_step_00020.pth"]
    assert files(root) == ["CFM_epoch_00006_step_00040.pth"]
    data = status(config)
    assert [a["cause"] for a in data["attempts"]] == ["crash", "completed"]
    assert data["last_verified_step"] == 40


@pytest.mark.slow
def test_a_nan_newest_file_is_moved_aside(tmp_path: Path) -> None:
    root = seed_vc_root(tmp_path)
    write_faults(root / "runs" / "svc", [{"at": 30, "kind": "nan"}, {"at": 35, "kind": "exception"}])
    config = supervise(tmp_path, root)
    result = run_cli("run", "-c", str(config))
    assert result.returncode == 0, result.stdout[-3000:]
    lines = trainer_output(tmp_path)
    assert f"Loaded checkpoint from {RUN_DIR}/DiT_epoch_00003_step_00020.pth" in trainer_said(lines)
    nan = [
        r.step
        for line in lines
        for r in read_line(ADAPTER.lines, line)
        if r.said is Said.LOSS and r.nonfinite
    ]
    assert nan == [30], "the EMA loss line after the weights went NaN"
    moved = quarantined(tmp_path, root)
    assert list(moved) == ["DiT_epoch_00004_step_00030.pth"]
    assert "non-finite" in moved["DiT_epoch_00004_step_00030.pth"]
    assert status(config)["state"] == "completed"


@pytest.mark.slow
def test_v1_progress_after_a_relaunch_is_a_stable_run_not_a_newer_step(tmp_path: Path) -> None:
    """What the step reset does under the supervisor. Attempt 1 saves 10, 20, 30 and
    crashes at 35. The relaunch loads step 30's weights and counts from 0 again: its
    step-10 save is deleted by train.py's keep-2 pruning as soon as it is written (20 and
    30 are higher), its 20 and 30 overwrite the files of the same name, and it crashes at
    35 again. No step beyond 30 is ever verified, so for this trainer progress is an
    attempt that ran stable_after_s (as without checkpoints): with
    max_attempts_without_progress = 1 the run still goes on and completes. Each relaunch
    is preceded by a warning that says what Seed-VC's resume costs. The verified copy of
    step 30 is the newest version of that name: the relaunch's overwrite (trained on top
    of the first attempt's) replaced the older copy once it was verified."""
    root = seed_vc_root(tmp_path)
    faults = [{"at": 35, "kind": "exception"}, {"at": 35, "kind": "exception"}]
    write_faults(root / "runs" / "svc", faults)
    config = supervise(tmp_path, root, max_attempts_without_progress=1, stable_after_s=0.5)
    result = run_cli("run", "-c", str(config))
    assert result.returncode == 0, result.stdout[-3000:]
    data = status(config)
    assert [a["cause"] for a in data["attempts"]] == ["crash", "crash", "completed"]
    assert data["last_verified_step"] == 30
    step_30 = f"Loaded checkpoint from {RUN_DIR}/DiT_epoch_00004_step_00030.pth"
    said = trainer_said(trainer_output(tmp_path))
    assert said[0] == "Failed to load any checkpoint, training from scratch."
    assert said.count(step_30) == 2
    # (status shows the recent events only; the ledger keeps one warning per relaunch)
    warnings = [e["message"] for e in data["events"] if e["kind"] == "relaunch_warning"]
    assert warnings
    assert warnings[-1].startswith("Seed-VC resumes only the weights of step 30 and counts from 0 again")
    (copy,) = (tmp_path / "state" / "verified" / "step-30" / "DiT").glob("*.pth")
    on_disk = root / "runs" / "svc" / copy.name
    newest: dict[str, Any] = torch.load(on_disk, weights_only=True)
    kept: dict[str, Any] = torch.load(copy, weights_only=True)
    assert torch.equal(newest["net"]["cfm"]["weight"], kept["net"]["cfm"]["weight"])


@pytest.mark.slow
def test_v2_after_a_relaunch_every_save_below_the_old_step_is_deleted_as_it_is_written(
    tmp_path: Path,
) -> None:
    """Left alone, a first launch saved step 30 (keep-1 left only that) and crashed at 35.
    Under the supervisor every relaunch loads it, counts from 0, and saves 10 and 20 —
    each deleted by train_v2.py's keep-1 pruning right after it is written, before it can
    be verified — then crashes at 25. Nothing newer than step 30 ever exists."""
    root = seed_vc_root(tmp_path)
    write_faults(root / "runs" / "svc", [{"at": 35, "kind": "exception"}])
    assert run_alone(root, v2=True).returncode == 1
    assert files(root) == ["CFM_epoch_00005_step_00030.pth"]
    first = (root / "runs" / "svc" / "CFM_epoch_00005_step_00030.pth").read_bytes()
    write_faults(root / "runs" / "svc", [{"at": 25, "kind": "exception", "repeat": True}])
    config = supervise(tmp_path, root, v2=True, max_attempts_without_progress=1)
    result = run_cli("run", "-c", str(config))
    assert result.returncode == 3, result.stdout[-3000:]
    lines = trainer_output(tmp_path)
    loads = [
        line for line in lines if line.startswith("Loading CFM checkpoint from ") and line.endswith(".pth")
    ]
    assert loads
    assert set(loads) == {"Loading CFM checkpoint from runs/svc/CFM_epoch_00005_step_00030.pth"}
    assert "Saved CFM checkpoint to runs/svc/CFM_epoch_00003_step_00020.pth" in lines
    assert files(root) == ["CFM_epoch_00005_step_00030.pth"]
    assert (root / "runs" / "svc" / "CFM_epoch_00005_step_00030.pth").read_bytes() == first
    listed = run_cli("checkpoints", "-c", str(config), "--json").stdout.splitlines()
    assert {Path(json.loads(row)["path"]).name for row in listed} == {"CFM_epoch_00005_step_00030.pth"}
    assert status(config)["state"] == "gave_up"


@pytest.mark.slow
def test_a_pretrained_checkpoint_is_refused_before_anything_runs(tmp_path: Path) -> None:
    root = seed_vc_root(tmp_path)
    config = write_config(
        tmp_path,
        adapter="seed-vc",
        command=[*argv(), "--pretrained-ckpt", "runs/old/ft_model.pth"],
        cwd=root,
        checkpoint_dir="runs/svc",
    )
    for args in (("config", "check", "-c", str(config)), ("run", "-c", str(config))):
        result = run_cli(*args)
        assert result.returncode == 2, result
        assert "--pretrained-ckpt: it makes Seed-VC load that file on every launch" in result.stderr
    assert not (tmp_path / "state" / "logs" / "trainer.log").exists()


# --- verify ------------------------------------------------------------------------------

GOOD = ("DiT_epoch_00003_step_00020.pth", "DiT_epoch_00004_step_00030.pth", "CFM_epoch_00006_step_00040.pth")
DAMAGED = {
    "DiT_epoch_00005_step_00031.pth": "zip",
    "DiT_epoch_00004_step_00032.pth": "nan",
    "DiT_epoch_00004_step_00033.pth": "missing key: net.cfm",
    "DiT_epoch_00004_step_00034.pth": "step mismatch: name says 34, content says 35",
    "DiT_epoch_00009_step_00036.pth": "epoch mismatch: name says 9, content says 4",
    "DiT_epoch_00004_step_00037.pth": "empty",
}


@pytest.fixture(scope="module")
def verified(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """`verify --adapter seed-vc` at once on what the twins wrote (V1: DiT 20 and 30 and
    ft_model.pth; V2: CFM 40) and on damaged files made from them: name -> result."""
    root = seed_vc_root(tmp_path_factory.mktemp("verify"))
    twins = [subprocess.Popen(argv(v2=v2), cwd=root, stdout=subprocess.DEVNULL) for v2 in (False, True)]
    assert [twin.wait(timeout=scaled(120)) for twin in twins] == [0, 0]
    run = root / "runs" / "svc"
    good: dict[str, Any] = torch.load(run / "DiT_epoch_00004_step_00030.pth", weights_only=True)
    data = (run / "DiT_epoch_00004_step_00030.pth").read_bytes()
    (run / "DiT_epoch_00005_step_00031.pth").write_bytes(data[: len(data) // 2])
    nan_net = {k: {n: torch.full_like(t, math.nan) for n, t in sd.items()} for k, sd in good["net"].items()}
    torch.save({**good, "net": nan_net, "iters": 32}, run / "DiT_epoch_00004_step_00032.pth")
    no_cfm = {"length_regulator": good["net"]["length_regulator"]}
    torch.save({**good, "net": no_cfm, "iters": 33}, run / "DiT_epoch_00004_step_00033.pth")
    torch.save({**good, "iters": 35}, run / "DiT_epoch_00004_step_00034.pth")
    torch.save({**good, "iters": 36}, run / "DiT_epoch_00009_step_00036.pth")
    (run / "DiT_epoch_00004_step_00037.pth").write_bytes(b"")
    names = [*GOOD, "ft_model.pth", *DAMAGED]
    result = run_cli("verify", "--adapter", "seed-vc", "--json", *(str(run / n) for n in names))
    assert result.returncode == 1, result.stderr
    return {Path(r["path"]).name: r for r in map(json.loads, result.stdout.splitlines())}


@pytest.mark.slow
def test_verify_good_files_of_both_versions(verified: dict[str, dict[str, Any]]) -> None:
    results = [verified[name] for name in GOOD]
    assert [(r["ok"], r["step"], r["epoch"]) for r in results] == [
        (True, 20, 3),
        (True, 30, 4),
        (True, 40, 6),
    ]


def test_verify_says_the_final_model_is_not_a_resume_point(verified: dict[str, dict[str, Any]]) -> None:
    result = verified["ft_model.pth"]
    assert result["ok"] is False
    assert "not a resume checkpoint" in result["reason"]
    assert "final model" in result["reason"]


@pytest.mark.parametrize(("name", "reason"), DAMAGED.items())
def test_verify_rejects_damage(verified: dict[str, dict[str, Any]], name: str, reason: str) -> None:
    result = verified[name]
    assert result["ok"] is False
    assert reason in result["reason"].lower(), result["reason"]


@pytest.mark.slow
def test_a_run_name_with_glob_metacharacters_is_refused_not_promised(tmp_path: Path) -> None:
    """`--run-name voice[v2]`: Seed-VC's own glob reads `[v2]` as a character class, finds
    none of its files and restarts from the hub weights. The plan says so and refuses;
    it never reports a landing."""
    root = seed_vc_root(tmp_path)
    command = [arg if arg != "svc" else "voice[v2]" for arg in argv()]
    write_faults(root / "runs" / "voice[v2]", [{"at": 25, "kind": "exception"}])
    config = write_config(
        tmp_path,
        adapter="seed-vc",
        command=command,
        cwd=root,
        checkpoint_dir="runs/voice[v2]",
    )
    result = run_cli("run", "-c", str(config))
    assert result.returncode == 3, result.stdout[-3000:]
    text = json.dumps(status(config))
    assert "glob metacharacters" in text
    assert "voice[v2]" in text
    said = trainer_said(trainer_output(tmp_path))
    assert said.count("Failed to load any checkpoint, training from scratch.") == 1, (
        "no second, doomed launch"
    )
    plan = run_cli("plan", "-c", str(config))
    assert plan.returncode == 1
    assert "REFUSED" in plan.stdout
