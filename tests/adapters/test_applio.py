"""The `applio` adapter: its model of Applio's resume rule, its readings of Applio's
output, and end to end with the real CLI around the layout twin (tests/support/trainers/applio_twin.py)."""

from __future__ import annotations

import json
import math
import subprocess
import wave
from pathlib import Path
from typing import Any

import pytest
import torch

import trainer_adapters
from supervisor.checkpoints.plan import Candidate, Snapshot, Status, plan, with_content_step
from supervisor.ledger import Ledger
from tests.support.load import scaled
from tests.support.twins import run_cli, status, trainer_output, twin_command, write_config, write_faults
from trainer_adapters.base import NamedCheckpoint, RuleFails, Said
from trainer_adapters.rules import arg_problems, read_line

ADAPTER = trainer_adapters.get("applio")
LAYOUT = ADAPTER.layout(ADAPTER.options())
EXP = Path("/srv/Applio/logs/voice")


# --- names, and the trainer's choice ---------------------------------------------------


def named(name: str, directory: Path = EXP) -> NamedCheckpoint:
    found = LAYOUT.parse(directory / name)
    assert found is not None, name
    return found


def test_names_the_trainer_globs_and_what_they_count() -> None:
    g = named("G_600.pth")
    assert (g.role, g.step, g.content_step, g.in_place) == ("G", None, True, False)
    assert (named("D_600.pth").role, named("D_600.pth").content_step) == ("D", True)
    sentinel = named("G_2333333.pth")
    assert (sentinel.role, sentinel.step, sentinel.in_place) == ("G", None, True)
    # The epoch is in the content (`iteration`), for numbered files and sentinels alike.
    for ckpt in (g, sentinel):
        expect = LAYOUT.expect(ckpt)
        assert (expect.step_key, expect.epoch_key) == ("iteration", "iteration")
        assert expect.required_keys == ("model", "iteration", "optimizer")
    assert LAYOUT.roles == ("G", "D")
    assert LAYOUT.recursive is False


def test_exports_are_not_resume_points_unless_the_glob_matches_them() -> None:
    export = EXP / "voice_10e_300s.pth"
    assert LAYOUT.parse(export) is None
    assert "inference export" in (LAYOUT.ignored(export) or "")
    assert "best-epoch" in (LAYOUT.ignored(EXP / "voice_10e_300s_best_epoch.pth") or "")
    assert LAYOUT.parse(EXP / "config.json") is None
    assert LAYOUT.ignored(EXP / "config.json") is None
    # A model called G_voice: its exports match glob("G_*.pth"), so the trainer loads them.
    odd = named("G_voice_10e_300s.pth", Path("/srv/Applio/logs/G_voice"))
    assert (odd.role, odd.content_step) == ("G", True)


def test_pick_is_the_newest_G_and_the_newest_D_each_by_the_digits_of_the_full_path() -> None:
    files = [named(n) for n in ("G_99.pth", "G_100.pth", "D_100.pth", "D_1000.pth")]
    picked = LAYOUT.pick(files)
    assert (picked["G"].path.name, picked["D"].path.name) == ("G_100.pth", "D_1000.pth")
    # The sentinel of "save only latest" outranks every real step number.
    picked = LAYOUT.pick([*files, named("G_2333333.pth")])
    assert picked["G"].path.name == "G_2333333.pth"
    # A model name starting with G_: the export has more digits than G_300 and wins.
    odd = Path("/srv/Applio/logs/G_voice")
    picked = LAYOUT.pick(
        [named("G_300.pth", odd), named("G_voice_10e_300s.pth", odd), named("D_300.pth", odd)]
    )
    assert picked["G"].path.name == "G_voice_10e_300s.pth"
    assert LAYOUT.pick([]) == {}
    # D first, then G, both or nothing: with only a G (or only a D) it starts over.
    assert LAYOUT.pick([named("G_100.pth")]) == {}
    assert LAYOUT.pick([named("D_100.pth")]) == {}


def test_pick_fails_where_int_of_no_digits_raises() -> None:
    nameless = named("G_latest.pth", Path("/srv/applio/logs/voice"))
    with pytest.raises(RuleFails) as failure:
        LAYOUT.pick([nameless])
    assert failure.value.culprits == (nameless,)


# --- the planner on realistic directories -----------------------------------------------


def ok(name: str, epoch: int, directory: Path = EXP) -> Candidate:
    return Candidate(with_content_step(named(name, directory), epoch), Status.OK)


def bad(name: str, directory: Path = EXP, reason: str = "torn") -> Candidate:
    return Candidate(named(name, directory), Status.REJECTED, reason)


def test_plan_a_torn_D_of_the_newest_pair_moves_the_whole_pair_aside() -> None:
    the_plan = plan(LAYOUT, [ok("G_6.pth", 2), ok("D_6.pth", 2), ok("G_12.pth", 4), bad("D_12.pth")])
    assert the_plan.ok
    assert the_plan.target_step == 2
    assert the_plan.lands_on == {"G": EXP / "G_6.pth", "D": EXP / "D_6.pth"}
    assert [m.path.name for m in the_plan.moves] == ["D_12.pth", "G_12.pth"]


def test_plan_a_leftover_sentinel_next_to_newer_numbered_files_is_moved_aside() -> None:
    files = [ok("G_2333333.pth", 2), ok("D_2333333.pth", 2), ok("G_12.pth", 4), ok("D_12.pth", 4)]
    the_plan = plan(LAYOUT, files)
    assert the_plan.ok
    assert the_plan.target_step == 4
    assert sorted(m.path.name for m in the_plan.moves) == ["D_2333333.pth", "G_2333333.pth"]


def test_plan_restores_a_torn_sentinel_from_its_verified_copy(tmp_path: Path) -> None:
    copy = tmp_path / "verified" / "G_2333333.pth"
    snaps = [Snapshot("G", 2, EXP / "G_2333333.pth", copy, in_place=True)]
    the_plan = plan(LAYOUT, [bad("G_2333333.pth"), ok("D_2333333.pth", 2)], snaps)
    assert the_plan.ok
    assert the_plan.target_step == 2
    assert [(r.copy, r.path) for r in the_plan.restores] == [(copy, EXP / "G_2333333.pth")]


def test_plan_moves_a_rejected_export_that_the_glob_matches() -> None:
    odd = Path("/srv/Applio/logs/G_voice")
    files = [ok("G_6.pth", 2, odd), ok("D_6.pth", 2, odd), bad("G_voice_2e_6s.pth", odd, "missing keys")]
    the_plan = plan(LAYOUT, files)
    assert the_plan.ok
    assert the_plan.lands_on["G"] == odd / "G_6.pth"
    assert [m.path.name for m in the_plan.moves] == ["G_voice_2e_6s.pth"]


def test_plan_orders_by_epoch_not_by_the_recomputed_step_in_the_name() -> None:
    # After a resume with a larger batch size the step numbers shrink: G_40 is epoch 4,
    # G_60 epoch 3. The newest state is epoch 4, which the trainer's digit sort misses.
    files = [ok("G_60.pth", 3), ok("D_60.pth", 3), ok("G_40.pth", 4), ok("D_40.pth", 4)]
    the_plan = plan(LAYOUT, files)
    assert the_plan.ok
    assert the_plan.target_step == 4
    assert sorted(m.path.name for m in the_plan.moves) == ["D_60.pth", "G_60.pth"]


# --- output lines ------------------------------------------------------------------------


def said(line: str) -> list[tuple[Said, int | None, int | None, str | None]]:
    return [(r.said, r.step, r.epoch, r.path) for r in read_line(ADAPTER.lines, line)]


def test_progress_lines() -> None:
    assert said("voice | epoch=1 | step=3 | time=15:03:11 | training_speed=0:00:00") == [
        (Said.PROGRESS, None, 1, None)
    ], "the printed step is recomputed on resume: this adapter counts epochs"
    long = (
        "my | voice | epoch=212 | step=9540 | time=02:13:59 | training_speed=1 day, 0:00:03"
        " | lowest_value=17.524 (epoch 190 and step 8550)"
    )
    assert said(long) == [(Said.PROGRESS, None, 212, None)]
    stopped = said("Overtraining detected at epoch 190 with smoothed loss_g 17.524 and loss_d 3.211")
    assert stopped == [(Said.COMPLETED, None, 190, None)], "3.6.3's early stop ends the run too"


def test_loaded_fresh_start_and_completed_lines() -> None:
    path = "/srv/Applio/logs/voice/G_2333333.pth"
    assert said(f"Loaded checkpoint '{path}' (epoch 40)") == [(Said.LOADED, None, 40, path)]
    pre = "rvc/models/pretraineds/hifi-gan/f0G40k.pth"
    assert said(f"Loaded pretrained (G) '{pre}'") == [(Said.FRESH_START, None, None, pre)]
    assert said(f"Loaded pretrained (D) '{pre}'") == []
    probe = (
        "Failed to load checkpoint: PytorchStreamReader failed reading zip archive: failed finding"
        " central directory. Using default number of speakers."
    )
    assert [s for s, *_ in said(probe)] == [Said.FRESH_START]
    assert said(f"Saved model '{path}' (epoch 40)") == [(Said.SAVED, None, None, None)]
    export = "logs/voice/voice_40e_8550s.pth"
    for line in (
        f"Saved model '{export}' (epoch 40 and step 8550)",
        "Lowest generator loss: 17.5 at epoch 190, step 8550",
    ):
        assert said(line) == []


@pytest.mark.parametrize(("text", "finite"), [("23.417", True), ("nan", False), ("inf", False)])
def test_the_completion_line_carries_the_last_generator_loss(text: str, finite: bool) -> None:
    line = f"Training has been successfully completed with 300 epoch, 9000 steps and {text} loss gen."
    readings = read_line(ADAPTER.lines, line)
    assert [(r.said, r.step, r.epoch) for r in readings] == [
        (Said.COMPLETED, 9000, 300),
        (Said.LOSS, 9000, 300),
    ]
    assert readings[1].nonfinite is not finite
    assert len(readings[1].losses) == 1
    assert math.isfinite(readings[1].losses[0]) is finite


@pytest.mark.parametrize(
    "line",
    [
        "Config file not found at /srv/Applio/logs/voice/config.json. Did you run preprocessing and"
        " feature extraction steps?",
        "Error: Pretrained model sample rate (40000 Hz) does not match dataset audio sample rate (48000 Hz).",
        "Not enough data present in the training set. Perhaps you forgot to slice the audio files in preprocess?",
        "Not enough data in in the training set. Perhaps you forgot to slice the audio files in preprocess?",
        "The parameters of the pretrain model such as the sample rate or architecture do not match the"
        " selected model.",
    ],
)
def test_fatal_lines_explain_themselves(line: str) -> None:
    (reading,) = read_line(ADAPTER.lines, line)
    assert reading.said is Said.FATAL
    assert "restarting cannot fix this" in reading.explain


# --- command line ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "refused"),
    [
        (["python", "core.py", "train", "--model-name", "v", "--cleanup", "--sample-rate", "40000"], True),
        (["python", "core.py", "train", "--model_name", "v", "--cleanup", "True"], True),
        (["python", "core.py", "train", "--model_name", "v", "--cleanup", "False"], False),
        (["python", "core.py", "train", "--model_name", "v", "--cleanup=False"], False),
        (["python", "core.py", "train", "--model-name", "v", "--save-only-latest"], False),
    ],
)
def test_cleanup_is_refused(argv: list[str], refused: bool) -> None:
    problems = arg_problems(ADAPTER.args, argv)
    assert bool(problems) is refused
    assert all("--cleanup deletes every G_*/D_*" in p for p in problems)


# train.py's 14 positional arguments (3.6.4 and later); cleanup is the 12th.
POSITIONAL = [
    "voice",
    "10",
    "300",
    "",
    "",
    "0",
    "8",
    "40000",
    "True",
    "True",
    "False",
    "False",
    "HiFi-GAN",
    "False",
]


@pytest.mark.parametrize(
    ("args", "refused"),
    [
        (POSITIONAL, False),
        ([*POSITIONAL[:11], "True", *POSITIONAL[12:]], True),
        ([*POSITIONAL[:11], "False", "25", "False", *POSITIONAL[12:]], False),  # 16 args: up to 3.6.3
        ([*POSITIONAL[:11], "False", "25", "True", *POSITIONAL[12:]], True),
        (POSITIONAL[:10], True),  # a count it does not know: it cannot tell where cleanup is
    ],
)
def test_a_direct_train_py_launch_is_checked_for_its_positional_cleanup(
    args: list[str], refused: bool
) -> None:
    problems = arg_problems(ADAPTER.args, ["python", "rvc/train/train.py", *args])
    assert bool(problems) is refused
    assert all("cleanup argument" in p for p in problems)


def test_the_checkpoint_directory_from_the_command() -> None:
    assert ADAPTER.launch is not None
    assert ADAPTER.launch.checkpoint_dir is not None
    find = ADAPTER.launch.checkpoint_dir
    assert find(ADAPTER.launch.example.split()) == "logs/myvoice"
    assert find(["python", "core.py", "train", "--model_name", "v2", "--save_every_epoch", "5"]) == "logs/v2"
    assert find(["python", "-u", "/opt/Applio/core.py", "train", "--model-name=a b"]) == "logs/a b"
    positional = ["python", "rvc/train/train.py", "voice", "10", "300", "", "", "0", "8", "40000"]
    assert find(positional) == "logs/voice"
    assert find(["python", "core.py", "train"]) is None
    assert find(["python", "train.py", "-m", "ljs"]) is None


# --- recognise ---------------------------------------------------------------------------


def test_recognises_applio_checkpoints_by_name_and_directory(tmp_path: Path) -> None:
    exp = tmp_path / "Applio" / "logs" / "voice"
    (exp / "sliced_audios").mkdir(parents=True)
    assert ADAPTER.recognise is not None
    assert ADAPTER.recognise(exp / "G_600.pth")
    assert ADAPTER.recognise(exp / "D_600.pth")
    assert not ADAPTER.recognise(exp / "voice_20e_600s.pth")
    vits = tmp_path / "vits" / "logs" / "ljs"  # VITS: the same names, none of Applio's files
    vits.mkdir(parents=True)
    (vits / "train.log").write_text("")
    assert not ADAPTER.recognise(vits / "G_600.pth")
    assert ADAPTER.recognise(vits.with_name("other") / "G_2333333.pth"), "the sentinel is Applio's (RVC's)"
    sovits = tmp_path / "GPT-SoVITS" / "logs" / "exp" / "logs_s2_v2Pro"
    assert not ADAPTER.recognise(sovits / "G_233333333333.pth")
    assert not ADAPTER.recognise(sovits / "G_600.pth")
    for other in ("ckpts/x/model_1000.pt", "ckpts/x/model_last.pt", "runs/x/DiT_epoch_00001_step_00100.pth"):
        assert not ADAPTER.recognise(tmp_path / other)
    assert trainer_adapters.detect(exp / "G_600.pth") is ADAPTER


# --- end to end with the twin --------------------------------------------------------------

G_PRE = "rvc/models/pretraineds/hifi-gan/f0G40k.pth"
D_PRE = "rvc/models/pretraineds/hifi-gan/f0D40k.pth"


def applio_root(
    tmp_path: Path, model: str = "voice", *, samples: int = 6, config: bool = True, rate: int = 40000
) -> Path:
    """An Applio root after preprocessing and extraction: logs/<model>/ and the pretrained G/D."""
    root = tmp_path / "applio"
    exp = root / "logs" / model
    (exp / "sliced_audios").mkdir(parents=True)
    if config:
        (exp / "config.json").write_text(json.dumps({"train": {"learning_rate": 1e-4}, "data": {}}))
    lines = [f"{exp}/sliced_audios/0_{i}.wav|{exp}/extracted/0_{i}.npy|0" for i in range(samples)]
    (exp / "filelist.txt").write_text("\n".join(lines) + "\n")
    with wave.open(str(exp / "sliced_audios" / "0_0.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\0\0" * 100)
    for name, seed in ((G_PRE, 1), (D_PRE, 2)):
        torch.manual_seed(seed)
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        torch.save({"model": torch.nn.Linear(2, 2).state_dict()}, root / name)
    return root


def twin_argv(
    model: str = "voice",
    *,
    save_every: int = 2,
    total: int = 6,
    only_latest: bool = False,
    weights: bool = False,
) -> list[str]:
    flags = [str(only_latest), str(weights), "False", "False", "HiFi-GAN", "False"]
    return twin_command(
        "applio_twin.py", model, str(save_every), str(total), G_PRE, D_PRE, "0", "2", "40000", *flags
    )


def supervise(
    tmp_path: Path, root: Path, argv: list[str], model: str = "voice", batch_s: float = 0.05, **restart: Any
) -> Path:
    config = write_config(
        tmp_path, adapter="applio", command=argv, cwd=root, checkpoint_dir=f"logs/{model}", restart=restart
    )
    text = config.read_text().replace("[run]\n", f'[run]\nenv = {{ APPLIO_TWIN_BATCH_S = "{batch_s}" }}\n', 1)
    config.write_text(text)
    return config


def said_lines(tmp_path: Path) -> list[str]:
    """What the twin said about where it starts from, over all attempts (paths by name)."""
    starts = ("Loaded checkpoint", "Loaded pretrained (G)", "Failed to load checkpoint", "Training has been")
    return [
        line.replace(str(tmp_path / "applio" / "logs") + "/", "")
        for line in trainer_output(tmp_path)
        if line.startswith(starts)
    ]


def quarantined(tmp_path: Path) -> list[str]:
    found = sorted((tmp_path / "state" / "quarantine").glob("*/*.pth"))
    for path in found:
        note = json.loads(path.with_name(path.name + ".json").read_text())
        assert note["original_path"].endswith(path.name)
    return sorted(p.name for p in found)


def run_alone(root: Path, argv: list[str]) -> subprocess.CompletedProcess[str]:
    env = {"APPLIO_TWIN_BATCH_S": "0.01", "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        argv, cwd=root, capture_output=True, text=True, timeout=scaled(120), env=env, check=False
    )


@pytest.mark.slow
def test_left_alone_applio_starts_over_on_a_torn_sentinel_and_overwrites_the_good_D(tmp_path: Path) -> None:
    """The control experiment: the real trainer silently starts from epoch 1 and its
    first save overwrites both sentinels, the good D included."""
    root = applio_root(tmp_path)
    exp = root / "logs" / "voice"
    write_faults(root, [{"at": 6, "kind": "torn"}])
    argv = twin_argv(only_latest=True, total=8)
    first = run_alone(root, argv)
    assert first.returncode == 0, "the parent exits 0 although its child was killed mid-save"
    assert torch.load(exp / "D_2333333.pth", weights_only=True)["iteration"] == 4
    write_faults(root, [{"at": 3, "kind": "sigkill"}])  # to look at the files after its first save
    again = run_alone(root, argv)
    assert again.returncode == 0
    assert "Failed to load checkpoint: PytorchStreamReader" in again.stdout
    assert f"Loaded pretrained (G) '{G_PRE}'" in again.stdout
    assert "Loaded checkpoint '" + str(exp / "D_2333333.pth") + "' (epoch 4)" in again.stdout, (
        "D loads, G fails"
    )
    assert "Loaded checkpoint '" + str(exp / "G_2333333.pth") not in again.stdout
    assert "voice | epoch=1 | step=3 |" in again.stdout
    assert torch.load(exp / "D_2333333.pth", weights_only=True)["iteration"] == 2, "epoch 4's D is gone"


@pytest.mark.slow
def test_a_torn_sentinel_is_restored_from_its_verified_copy(tmp_path: Path) -> None:
    # Attempt 1 saves epoch 2 and is killed in epoch 3 (so the copy of its sentinel is
    # certainly made before the relaunch); attempt 2 resumes and tears G at epoch 4.
    root = applio_root(tmp_path)
    write_faults(root, [{"at": 3, "kind": "sigkill"}, {"at": 4, "kind": "torn"}])
    config = supervise(tmp_path, root, twin_argv(only_latest=True))
    result = run_cli("run", "-c", str(config))
    assert result.returncode == 0, result.stdout[-3000:]
    lines = said_lines(tmp_path)
    resumed = [
        "Loaded checkpoint 'voice/D_2333333.pth' (epoch 2)",
        "Loaded checkpoint 'voice/G_2333333.pth' (epoch 2)",
    ]
    assert lines[:5] == [f"Loaded pretrained (G) '{G_PRE}'", *resumed, *resumed]
    assert lines[5].startswith("Training has been successfully completed with 6 epoch, 18 steps and ")
    assert len(lines) == 6
    assert quarantined(tmp_path) == ["G_2333333.pth"]
    data = status(config)
    assert data["state"] == "completed"
    assert [a["cause"] for a in data["attempts"]] == ["crash", "crash", "completed"]
    assert "restore 1: G_2333333.pth" in data["last_plan"]["summary"]
    ledger = Ledger.open_readonly(tmp_path / "state")
    assert ledger is not None
    said_events = [(e.attempt, e.kind) for e in ledger.events(limit=1000) if e.kind.startswith("trainer_")]
    ledger.close()
    assert said_events == [
        (1, "trainer_fresh_start"),
        (2, "trainer_loaded"),
        (2, "trainer_loaded"),
        (3, "trainer_loaded"),
        (3, "trainer_loaded"),
        (3, "trainer_completed"),
    ]


@pytest.mark.slow
def test_a_torn_D_of_the_newest_pair_sends_the_trainer_to_the_pair_before(tmp_path: Path) -> None:
    root = applio_root(tmp_path)
    write_faults(root, [{"at": 4, "kind": "torn:D"}])
    config = supervise(tmp_path, root, twin_argv())
    result = run_cli("run", "-c", str(config))
    assert result.returncode == 0, result.stdout[-3000:]
    assert said_lines(tmp_path)[1:3] == [
        "Loaded checkpoint 'voice/D_6.pth' (epoch 2)",
        "Loaded checkpoint 'voice/G_6.pth' (epoch 2)",
    ]
    assert quarantined(tmp_path) == ["D_12.pth", "G_12.pth"]
    assert status(config)["state"] == "completed"


@pytest.mark.slow
def test_a_nan_pair_is_moved_aside(tmp_path: Path) -> None:
    root = applio_root(tmp_path)
    write_faults(root, [{"at": 4, "kind": "nan"}, {"at": 5, "kind": "sigkill"}])
    config = supervise(tmp_path, root, twin_argv())
    result = run_cli("run", "-c", str(config))
    assert result.returncode == 0, result.stdout[-3000:]
    lines = said_lines(tmp_path)
    assert lines[1:3] == [
        "Loaded checkpoint 'voice/D_6.pth' (epoch 2)",
        "Loaded checkpoint 'voice/G_6.pth' (epoch 2)",
    ]
    assert "nan loss gen" not in lines[-1]
    assert quarantined(tmp_path) == ["D_12.pth", "G_12.pth"]
    listed = [json.loads(x) for x in run_cli("checkpoints", "-c", str(config), "--json").stdout.splitlines()]
    reasons = [c.get("reason") or "" for c in listed if Path(c["path"]).name == "G_12.pth"]
    assert any("nan" in r.lower() or "finite" in r.lower() for r in reasons), reasons


@pytest.mark.slow
def test_a_leftover_sentinel_is_moved_aside_and_the_trainer_lands_on_the_newest_epoch(tmp_path: Path) -> None:
    root = applio_root(tmp_path)
    # An earlier run with "save only latest" left the sentinel pair at epoch 2.
    assert run_alone(root, twin_argv(only_latest=True, total=2)).returncode == 0
    write_faults(root, [{"at": 5, "kind": "sigkill"}])
    config = supervise(tmp_path, root, twin_argv(total=6))
    result = run_cli("run", "-c", str(config))
    assert result.returncode == 0, result.stdout[-3000:]
    assert said_lines(tmp_path)[:4] == [
        "Loaded checkpoint 'voice/D_2333333.pth' (epoch 2)",
        "Loaded checkpoint 'voice/G_2333333.pth' (epoch 2)",
        "Loaded checkpoint 'voice/D_12.pth' (epoch 4)",
        "Loaded checkpoint 'voice/G_12.pth' (epoch 4)",
    ]
    assert quarantined(tmp_path) == ["D_2333333.pth", "G_2333333.pth"]


@pytest.mark.slow
def test_exports_of_a_model_named_G_something_are_moved_aside(tmp_path: Path) -> None:
    model = "G_voice"
    root = applio_root(tmp_path, model)
    write_faults(root, [{"at": 5, "kind": "sigkill"}])
    config = supervise(tmp_path, root, twin_argv(model, weights=True), model=model)
    result = run_cli("run", "-c", str(config))
    assert result.returncode == 0, result.stdout[-3000:]
    assert said_lines(tmp_path)[1:3] == [
        "Loaded checkpoint 'G_voice/D_12.pth' (epoch 4)",
        "Loaded checkpoint 'G_voice/G_12.pth' (epoch 4)",
    ]
    # The last export goes aside when the finished run's directory is settled: the trainer
    # would pick it (and crash) at the next resume, e.g. with more epochs.
    assert quarantined(tmp_path) == ["G_voice_2e_6s.pth", "G_voice_4e_12s.pth", "G_voice_6e_18s.pth"]
    note = json.loads(next((tmp_path / "state" / "quarantine").glob("*/G_voice_4e_12s.pth.json")).read_text())
    assert "missing key" in note["reason"]


@pytest.mark.slow
def test_completion_comes_from_the_line_since_the_exit_code_lies(tmp_path: Path) -> None:
    root = applio_root(tmp_path)
    write_faults(root, [{"at": 3, "kind": "exception"}])
    # Attempt 1 crashes after saving epoch 2 (progress), so a limit of 1 does not end the run.
    config = supervise(tmp_path, root, twin_argv(total=4), max_attempts_without_progress=1)
    result = run_cli("run", "-c", str(config))
    assert result.returncode == 0, result.stdout[-3000:]
    data = status(config)
    assert [a["cause"] for a in data["attempts"]] == ["crash", "completed"]
    assert [a["exit"] for a in data["attempts"]] == ["exit code 0"] * 2, (
        "a traceback in the child, yet exit 0"
    )
    assert any("Traceback" in line for line in trainer_output(tmp_path))
    # Started again after completion: nothing is launched.
    again = run_cli("run", "-c", str(config))
    assert again.returncode == 0, again.stdout[-3000:]
    assert status(config)["attempt"] == 2
    # Forced with --again, the trainer loads the last epoch, has nothing to do and exits 0
    # without a word: without its completion line that is a crash without progress.
    forced = run_cli("run", "-c", str(config), "--again")
    assert forced.returncode == 3, forced.stdout[-3000:]
    data = status(config)
    assert data["state"] == "gave_up"
    assert [a["cause"] for a in data["attempts"]][2:] == ["crash"]
    assert said_lines(tmp_path)[-2:] == [
        "Loaded checkpoint 'voice/D_12.pth' (epoch 4)",
        "Loaded checkpoint 'voice/G_12.pth' (epoch 4)",
    ]


@pytest.mark.parametrize(
    ("samples", "config", "rate", "explains"),
    [
        (4, True, 40000, "fewer than 3 batches"),  # in the child: the parent still exits 0
        (6, False, 40000, "config.json is missing"),
        (6, True, 48000, "differs from the dataset's"),
    ],
)
@pytest.mark.slow
def test_fatal_lines_end_the_run_at_once(
    tmp_path: Path, samples: int, config: bool, rate: int, explains: str
) -> None:
    root = applio_root(tmp_path, samples=samples, config=config, rate=rate)
    path = supervise(tmp_path, root, twin_argv())
    result = run_cli("run", "-c", str(path))
    assert result.returncode == 3, result.stdout[-3000:]
    data = status(path)
    assert [a["cause"] for a in data["attempts"]] == ["not-retryable"]
    assert explains in json.dumps(data)


@pytest.mark.slow
def test_cleanup_is_refused_before_anything_runs(tmp_path: Path) -> None:
    root = applio_root(tmp_path)
    command = ["python", "core.py", "train", "--model-name", "voice", "--save-every-epoch", "2", "--cleanup"]
    config = supervise(tmp_path, root, command)
    for args in (("config", "check", "-c", str(config)), ("run", "-c", str(config))):
        result = run_cli(*args)
        assert result.returncode == 2, result
        assert "--cleanup deletes every G_*/D_*" in result.stderr
    assert not (tmp_path / "state" / "logs" / "trainer.log").exists()


# --- verify ------------------------------------------------------------------------------

DAMAGE = {
    "D_18.pth": "zip",  # torn: the first half of D_12
    "G_18.pth": "nan",
    "G_24.pth": "missing key: optimizer",
    "G_30.pth": "not a whole number",  # iteration = "four"
    "G_36.pth": "empty",
}
GOOD = {"G_6.pth": 2, "D_6.pth": 2, "G_12.pth": 4, "D_12.pth": 4, "G_2333333.pth": 4}


@pytest.fixture(scope="module")
def verified(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """`verify --adapter applio --json` on what the twin wrote (G/D_6, G/D_12, exports)
    and on damaged files made from them; one call, results by file name."""
    root = applio_root(tmp_path_factory.mktemp("verify"))
    assert run_alone(root, twin_argv(total=4, weights=True)).returncode == 0
    exp = root / "logs" / "voice"
    good: dict[str, Any] = torch.load(exp / "G_12.pth", weights_only=True)
    (exp / "G_2333333.pth").write_bytes((exp / "G_12.pth").read_bytes())
    data = (exp / "D_12.pth").read_bytes()
    (exp / "D_18.pth").write_bytes(data[: len(data) // 2])
    nan_model = {k: torch.full_like(v, math.nan) for k, v in good["model"].items()}
    torch.save({**good, "model": nan_model}, exp / "G_18.pth")
    torch.save({k: v for k, v in good.items() if k != "optimizer"}, exp / "G_24.pth")
    torch.save({**good, "iteration": "four"}, exp / "G_30.pth")
    (exp / "G_36.pth").write_bytes(b"")
    names = [*GOOD, *DAMAGE, "voice_4e_12s.pth"]
    result = run_cli("verify", "--adapter", "applio", "--json", *(str(exp / n) for n in names))
    assert result.returncode == 1, result.stderr
    return {Path(r["path"]).name: r for r in map(json.loads, result.stdout.splitlines())}


@pytest.mark.slow
def test_verify_good_files_and_sentinels(verified: dict[str, dict[str, Any]]) -> None:
    for name, epoch in GOOD.items():
        result = verified[name]
        # `step`: the trainer's global step, from the name (the sentinel has none).
        step = None if "2333333" in name else int(name[2:-4])
        assert (result["ok"], result["step"], result["epoch"], result["resume_unit"]) == (
            True,
            step,
            epoch,
            "epoch",
        ), result


def test_verify_says_an_export_is_not_a_resume_point(verified: dict[str, dict[str, Any]]) -> None:
    result = verified["voice_4e_12s.pth"]
    assert result["ok"] is False
    assert "not a resume checkpoint" in result["reason"]
    assert "inference export" in result["reason"]


@pytest.mark.parametrize(("name", "reason"), DAMAGE.items())
def test_verify_rejects_damage(verified: dict[str, dict[str, Any]], name: str, reason: str) -> None:
    result = verified[name]
    assert result["ok"] is False
    assert reason in result["reason"].lower(), result["reason"]


@pytest.mark.slow
def test_a_silent_fresh_start_without_pretrained_weights_is_told_by_its_first_epoch(tmp_path: Path) -> None:
    """Without pretrained weights Applio's fallback prints nothing. The first epoch line
    it prints (epoch 1, where a resume from epoch 2 prints 3) is the only sign: the
    attempt is stopped before it overwrites anything, and relaunched."""
    root = applio_root(tmp_path)
    argv = [arg if arg not in (G_PRE, D_PRE) else "None" for arg in twin_argv(total=6)]
    write_faults(root, [{"at": 3, "kind": "exception"}, {"at": "start", "kind": "fresh"}])
    config = supervise(tmp_path, root, argv)
    result = run_cli("run", "-c", str(config))
    assert result.returncode == 0, result.stdout[-3000:]
    causes = [a["cause"] for a in status(config)["attempts"]]
    assert causes == ["crash", "silent-reset", "completed"], causes
    text = json.dumps(status(config))
    assert "reports epoch 1 although it should resume from verified epoch 2" in text
