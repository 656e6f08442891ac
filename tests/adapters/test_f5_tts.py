"""The `f5-tts` adapter: its model of `Trainer.load_checkpoint`, its readings of the tqdm
output, and end to end with the real CLI around the layout twin (tests/support/trainers/f5_tts_twin.py)."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

import trainer_adapters
from supervisor.checkpoints.plan import Candidate, Snapshot, Status, plan
from tests.support.load import scaled
from tests.support.twins import run_cli, status, trainer_output, twin_command, write_config, write_faults
from trainer_adapters.base import NamedCheckpoint, RuleFails, Said
from trainer_adapters.f5_tts import F5Layout, F5Options
from trainer_adapters.rules import read_line

ADAPTER = trainer_adapters.get("f5-tts")
LAYOUT = ADAPTER.layout(ADAPTER.options())
CKPTS = Path("/srv/F5-TTS/ckpts/my_dataset")


def named(name: str, directory: Path = CKPTS) -> NamedCheckpoint:
    found = LAYOUT.parse(directory / name)
    assert found is not None, name
    return found


# --- names, and the trainer's choice ---------------------------------------------------


def test_names_and_what_they_count() -> None:
    last = named("model_last.pt")
    assert (last.step, last.in_place) == (None, True), "its update is in the content"
    assert (named("model_50000.pt").step, named("model_50000.pt").in_place) == (50000, False)
    # Every model_* name the trainer's digit sort looks at, with that sort's key as its step.
    assert named("model_1250000.safetensors").step == 1250000
    assert named("model_best.pt").step is None
    assert LAYOUT.roles == ("model",)
    assert LAYOUT.recursive is False
    expect = LAYOUT.expect(last)
    assert expect.step_key == "step|update", (
        "update, or step in files before v0.4.0 (step first, as the trainer reads)"
    )
    assert set(expect.required_keys) == {
        "model_state_dict",
        "optimizer_state_dict",
        "ema_model_state_dict",
        "scheduler_state_dict",
    }
    assert expect.allowed_globals == ()


def test_checkpoints_of_f5_tts_before_v0_4_count_in_step() -> None:
    legacy = F5Layout(F5Options(step_key="step")).expect(named("model_last.pt"))
    assert legacy.step_key == "step"


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("pretrained_model_1250000.safetensors", "pretrained EMA weights"),
        ("pretrained_model_1200000.pt", "pretrained EMA weights"),
        ("update_5000_gen.wav", "--log_samples"),
        ("backup.pt", "never loads it"),
    ],
)
def test_what_is_not_a_resume_point(name: str, why: str) -> None:
    assert LAYOUT.parse(CKPTS / name) is None
    assert why in (LAYOUT.ignored(CKPTS / name) or "")


def test_pick_takes_model_last_whenever_it_is_there() -> None:
    files = [named("model_last.pt"), named("model_100000.pt"), named("model_best.pt")]
    assert LAYOUT.pick(files)["model"].path.name == "model_last.pt"


def test_else_the_largest_digits_of_the_file_name_safetensors_included() -> None:
    run2024 = Path("/srv/F5-TTS/ckpts/run2024")  # the directory's digits do not count
    files = [named(n, run2024) for n in ("model_9.pt", "model_10.pt")]
    assert LAYOUT.pick(files)["model"].path.name == "model_10.pt"
    files.append(named("model_1250000.safetensors", run2024))
    assert LAYOUT.pick(files)["model"].path.name == "model_1250000.safetensors"
    assert LAYOUT.pick([]) == {}, "pretrained_* only: a fresh start at update 0"
    # A verified copy put back: ordered by its name like the rest.
    restored = NamedCheckpoint(CKPTS / "model_20.pt", "model", 20)
    assert LAYOUT.pick([named("model_10.pt"), restored])["model"] is restored


def test_a_model_name_without_digits_makes_the_trainers_sort_raise() -> None:
    best = named("model_best.pt")
    with pytest.raises(RuleFails) as failure:
        LAYOUT.pick([named("model_10.pt"), best])
    assert failure.value.culprits == (best,)
    assert "int('')" in failure.value.why


# --- the planner on realistic directories -----------------------------------------------


def ok(name: str, update: int | None = None) -> Candidate:
    ckpt = named(name)
    return Candidate(
        ckpt if update is None else NamedCheckpoint(ckpt.path, "model", update, in_place=True), Status.OK
    )


def bad(name: str, reason: str = "truncated: no zip central directory") -> Candidate:
    return Candidate(named(name), Status.REJECTED, reason)


def test_plan_a_torn_model_last_is_restored_from_its_verified_copy(tmp_path: Path) -> None:
    copy = tmp_path / "verified" / "model_last.pt"
    snaps = [Snapshot("model", 5000, CKPTS / "model_last.pt", copy, in_place=True)]
    the_plan = plan(LAYOUT, [bad("model_last.pt")], snaps)
    assert the_plan.ok
    assert (
        the_plan.summary()
        == "resume from step 5000 (model_last.pt); move aside 1: model_last.pt; restore 1: model_last.pt"
    )


def test_plan_a_nan_model_last_without_a_copy_leaves_the_numbered_file_to_the_sort() -> None:
    the_plan = plan(LAYOUT, [ok("model_50000.pt"), bad("model_last.pt", "non-finite values")])
    assert the_plan.ok
    assert the_plan.lands_on == {"model": CKPTS / "model_50000.pt"}
    assert [m.path.name for m in the_plan.moves] == ["model_last.pt"]


def test_plan_an_ema_only_file_that_would_win_the_digit_sort_is_moved_aside() -> None:
    # Without model_last.pt the released (or pruned) weights would win by their digits and
    # restart at update 0: the validator rejects them for their missing keys.
    files = [ok("model_50000.pt"), bad("model_1250000.safetensors", "missing keys: model_state_dict, ...")]
    the_plan = plan(LAYOUT, files)
    assert the_plan.ok
    assert the_plan.lands_on == {"model": CKPTS / "model_50000.pt"}
    assert [m.path.name for m in the_plan.moves] == ["model_1250000.safetensors"]


def test_plan_a_name_the_sort_chokes_on_is_moved_aside_only_when_the_sort_runs() -> None:
    the_plan = plan(LAYOUT, [ok("model_50000.pt"), ok("model_best.pt")])
    assert the_plan.ok
    assert [m.path.name for m in the_plan.moves] == ["model_best.pt"]
    assert "resume rule fails" in the_plan.moves[0].reason
    with_last = plan(LAYOUT, [ok("model_last.pt", 55000), ok("model_50000.pt"), ok("model_best.pt")])
    assert with_last.ok
    assert with_last.moves == [], "model_last.pt is taken before any sort"


def test_plan_model_last_at_the_same_update_as_a_numbered_file_is_left_alone() -> None:
    the_plan = plan(LAYOUT, [ok("model_last.pt", 50000), ok("model_50000.pt")])
    assert the_plan.ok
    assert (the_plan.target, the_plan.moves) == ({"model": CKPTS / "model_last.pt"}, [])


def test_plan_an_older_model_last_is_moved_aside_for_a_newer_numbered_file() -> None:
    # last_per_updates 3, save_per_updates 4: at update 5 model_last is at 3, model_4 newer.
    the_plan = plan(LAYOUT, [ok("model_last.pt", 3), ok("model_4.pt")])
    assert the_plan.ok
    assert the_plan.target_step == 4
    assert [m.path.name for m in the_plan.moves] == ["model_last.pt"]


# --- output lines ------------------------------------------------------------------------


def readings(line: str) -> list[tuple[Said, int | None, int | None, tuple[float, ...]]]:
    return [(r.said, r.epoch, r.step, r.losses) for r in read_line(ADAPTER.lines, line)]


BAR = "Epoch 1/11:  20%|██        | 2/10 [00:00<00:00, 6442.86update/s, loss={}, update=6]"


@pytest.mark.parametrize(
    ("text", "value"),
    [("0.712", 0.712), ("1.23e-5", 1.23e-5), ("nan", math.nan), ("inf", math.inf), ("-inf", -math.inf)],
)
def test_progress_and_loss_from_the_tqdm_bar(text: str, value: float) -> None:
    found = read_line(ADAPTER.lines, BAR.format(text))
    assert [(r.said, r.epoch, r.step) for r in found] == [(Said.PROGRESS, 1, 6), (Said.LOSS, 1, 6)]
    (loss,) = found[1].losses
    assert loss == value or (math.isnan(loss) and math.isnan(value))
    assert found[1].nonfinite is not math.isfinite(value)


def test_builds_that_print_step_instead_of_update() -> None:
    line = "Epoch 3/100:  45%|████▌     | 150/333 [01:02<01:14,  2.45step/s, loss=0.65, step=816]"
    assert readings(line) == [(Said.PROGRESS, 3, 816, ()), (Said.LOSS, 3, 816, (0.65,))]


def test_other_lines() -> None:
    assert readings("Epoch 1/2:   0%|          | 0/4 [00:00<?, ?update/s]") == []
    assert readings("Saved last checkpoint at update 5000") == [
        (Said.PROGRESS, None, 5000, ()),
        (Said.SAVED, None, None, ()),
    ]
    assert readings("Removed old checkpoint: model_50000.pt") == []
    # F5-TTS says nothing when it loads, and its exit status is honest.
    assert {rule.said for rule in ADAPTER.lines} == {Said.PROGRESS, Said.LOSS, Said.FATAL, Said.SAVED}
    assert ADAPTER.exit_codes_trusted is True


@pytest.mark.parametrize(
    ("line", "explains"),
    [
        ("AttributeError: 'AcceleratedOptimizer' object has no attribute '_modules'", "accelerate==1.6.0"),
        ("RuntimeError: Error(s) in loading state_dict for CFM:", "vocabulary"),
        (
            "\tsize mismatch for transformer.text_embed.text_embed.weight: copying a param with shape "
            "torch.Size([2546, 512]) from checkpoint, the shape in current model is torch.Size([2600, 512]).",
            "--exp_name",
        ),
    ],
)
def test_fatal_lines_explain_themselves(line: str, explains: str) -> None:
    (reading,) = read_line(ADAPTER.lines, line)
    assert reading.said is Said.FATAL
    assert explains in reading.explain


def test_what_the_trainer_is_and_how_it_runs() -> None:
    assert ADAPTER.fp16_loss_scaling is False, "accelerate's mixed precision is off unless configured"
    assert ADAPTER.args == ()
    assert ADAPTER.launch is not None
    assert ADAPTER.launch.checkpoint_dir is not None
    derive = ADAPTER.launch.checkpoint_dir
    cli = "src/f5_tts/train/finetune_cli.py"
    assert (
        derive(["accelerate", "launch", cli, "--dataset_name", "my_voice", "--finetune"]) == "ckpts/my_voice"
    )
    assert derive(["accelerate", "launch", cli, "--dataset_name=my_voice"]) == "ckpts/my_voice"
    assert derive(["f5-tts_finetune-cli", "--exp_name", "F5TTS_v1_Base"]) == "ckpts/Emilia_ZH_EN"
    train = ["accelerate", "launch", "src/f5_tts/train/train.py", "--config-name", "F5TTS_v1_Base.yaml"]
    assert derive([*train, "++ckpts.save_dir=ckpts/mine"]) == "ckpts/mine"
    assert derive(train) is None, "the directory is in the YAML"
    assert derive(ADAPTER.launch.example.split()) == "ckpts/my_dataset"


def test_recognises_f5_checkpoints_by_name_and_directory() -> None:
    for name in ("model_last.pt", "model_50000.pt"):
        assert ADAPTER.recognise is not None
        assert ADAPTER.recognise(CKPTS / name)
        assert trainer_adapters.detect(CKPTS / name) is ADAPTER
    for path in (
        CKPTS / "pretrained_model_1250000.safetensors",
        Path("/x/runs/exp/model_50000.pt"),  # not under ckpts/
        Path("/x/logs/exp/logs_s1_v2Pro/ckpt/epoch=3-step=9.ckpt"),
        Path("/x/ckpts/ds/G_1000.pth"),
        Path("/x/checkpoints/last.pt"),
    ):
        assert ADAPTER not in trainer_adapters.recognising(path), path


def test_the_step_key_option_is_checked(tmp_path: Path) -> None:
    command = ["accelerate", "launch", "finetune_cli.py", "--dataset_name", "ds"]
    config = write_config(
        tmp_path,
        adapter="f5-tts",
        command=command,
        cwd=tmp_path,
        checkpoint_dir="ckpts/ds",
        options={"step_key": "steps"},
    )
    result = run_cli("config", "check", "-c", str(config))
    assert result.returncode == 2
    assert "step_key" in result.stderr


# --- end to end: the real CLI around the twin --------------------------------------------


def f5_root(tmp_path: Path) -> Path:
    """An F5-TTS checkout with the released weights downloaded (EMA only, safetensors)."""
    root = tmp_path / "F5-TTS"
    (root / "pretrained").mkdir(parents=True)
    torch.manual_seed(7)
    ema = {f"ema_model.{k}": v for k, v in torch.nn.Linear(2, 2).state_dict().items()}
    save_file(
        {**ema, "initted": torch.tensor(True), "step": torch.tensor(1250000)},
        root / "pretrained" / PRETRAINED,
    )
    return root


PRETRAINED = "model_1250000.safetensors"


def argv(*, last: int, save: int, keep: int = -1, update_s: float = 0.05, finetune: bool = True) -> list[str]:
    flags = ["--dataset_name", "ds", "--epochs", "2", "--learning_rate", "0.01", "--twin_batches", "4"]
    flags += ["--last_per_updates", str(last), "--save_per_updates", str(save)]
    flags += ["--keep_last_n_checkpoints", str(keep), "--twin_update_s", str(update_s)]
    flags += ["--finetune", "--pretrain", f"pretrained/{PRETRAINED}"] if finetune else []
    return twin_command("f5_tts_twin.py", *flags)


def supervise(tmp_path: Path, root: Path, command: list[str], **checkpoints: Any) -> Path:
    return write_config(
        tmp_path,
        adapter="f5-tts",
        command=command,
        cwd=root,
        checkpoint_dir="ckpts/ds",
        checkpoints=checkpoints,
    )


def first_updates(tmp_path: Path) -> list[int | None]:
    """Per launch (each prints `Using logger:` first), the first update its bar shows: one past
    the update it resumed at. The real trainer prints nothing else about where it starts."""
    firsts: list[int | None] = []
    for line in trainer_output(tmp_path):
        if line.startswith("Using logger:"):
            firsts.append(None)
        elif firsts and firsts[-1] is None and line.startswith("Epoch "):
            steps = [r.step for r in read_line(ADAPTER.lines, line) if r.said is Said.PROGRESS]
            firsts[-1] = steps[0] if steps else None
    return firsts


def quarantined(tmp_path: Path) -> list[str]:
    found = sorted(p for p in (tmp_path / "state" / "quarantine").glob("*/*") if p.suffix != ".json")
    for path in found:
        note = json.loads(path.with_name(path.name + ".json").read_text())
        assert note["original_path"].endswith(f"ckpts/ds/{path.name}")
    return [p.name for p in found]


def run_alone(root: Path, command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=scaled(120), check=False)


@pytest.mark.slow
def test_left_alone_f5_crash_loops_on_a_torn_model_last(tmp_path: Path) -> None:
    """The control experiment: model_last.pt is always taken, and a load error is not caught."""
    root = f5_root(tmp_path)
    write_faults(root, [{"at": 6, "kind": "torn"}])
    command = argv(last=2, save=4, update_s=0.01)
    assert run_alone(root, command).returncode == -9
    again = run_alone(root, command)  # and so on, every time: nothing moves the file
    assert again.returncode == 1
    assert "PytorchStreamReader failed reading zip archive" in again.stderr
    assert (root / "ckpts" / "ds" / "model_4.pt").exists(), "a good, older checkpoint was there all along"


@pytest.mark.slow
def test_a_torn_model_last_is_restored_from_its_verified_copy(tmp_path: Path) -> None:
    root = f5_root(tmp_path)
    # Attempt 1 saves update 4 and crashes (its verified copy is made before the relaunch);
    # attempt 2 resumes and tears model_last.pt at update 8.
    write_faults(root, [{"at": 5, "kind": "exception"}, {"at": 8, "kind": "torn"}])
    # keep_last_n_checkpoints 0: model_last.pt is the only checkpoint there is.
    config = supervise(tmp_path, root, argv(last=4, save=4, keep=0, update_s=0.02))
    result = run_cli("run", "-c", str(config))
    assert result.returncode == 0, result.stdout[-3000:]
    assert first_updates(tmp_path) == [1, 5, 5], "both relaunches resumed at update 4"
    assert quarantined(tmp_path) == ["model_last.pt"]
    data = status(config)
    assert [a["cause"] for a in data["attempts"]] == ["crash", "crash", "completed"]
    assert data["last_plan"]["summary"] == (
        "resume from step 4 (model_last.pt); move aside 1: model_last.pt; restore 1: model_last.pt"
    )
    assert data["last_verified_step"] == 8
    assert sorted(p.name for p in (root / "ckpts" / "ds").iterdir()) == [
        "model_last.pt",
        f"pretrained_{PRETRAINED}",
    ]


@pytest.mark.slow
def test_a_nan_model_last_is_moved_aside_and_the_trainer_takes_the_numbered_file(tmp_path: Path) -> None:
    root = f5_root(tmp_path)
    write_faults(root, [{"at": 6, "kind": "nan"}, {"at": 7, "kind": "exception"}])
    config = supervise(tmp_path, root, argv(last=2, save=4, keep=1))
    result = run_cli("run", "-c", str(config))
    assert result.returncode == 0, result.stdout[-3000:]
    assert first_updates(tmp_path) == [1, 5], "resumed at update 4, from model_4.pt"
    assert quarantined(tmp_path) == ["model_last.pt"]
    output = trainer_output(tmp_path)
    losses = [r for line in output for r in read_line(ADAPTER.lines, line) if r.said is Said.LOSS]
    assert [r.step for r in losses if r.nonfinite] == [6, 7], "the twin's own bar, read by the adapter"
    assert "Removed old checkpoint: model_4.pt" in output, "keep_last_n_checkpoints 1, after model_8"
    assert sorted(p.name for p in (root / "ckpts" / "ds").iterdir()) == [
        "model_8.pt",
        "model_last.pt",
        f"pretrained_{PRETRAINED}",
    ]


@pytest.mark.slow
def test_released_weights_in_the_directory_never_reset_the_run_to_update_0(tmp_path: Path) -> None:
    # Someone copied the released model_1250000.safetensors into the run's directory. Once
    # model_last.pt is gone (here: torn, and no verified copy kept), it would win the digit
    # sort and silently restart at update 0 with a fresh optimizer.
    root = f5_root(tmp_path)
    (root / "ckpts" / "ds").mkdir(parents=True)
    (root / "ckpts" / "ds" / PRETRAINED).write_bytes((root / "pretrained" / PRETRAINED).read_bytes())
    write_faults(root, [{"at": 6, "kind": "torn"}])
    config = supervise(tmp_path, root, argv(last=2, save=4, finetune=False), keep_verified=0)
    result = run_cli("run", "-c", str(config))
    assert result.returncode == 0, result.stdout[-3000:]
    assert first_updates(tmp_path) == [1, 5], "resumed at update 4, from model_4.pt"
    assert quarantined(tmp_path) == ["model_1250000.safetensors", "model_last.pt"]
    note = next((tmp_path / "state" / "quarantine").glob(f"*/{PRETRAINED}.json"))
    assert "missing keys" in json.loads(note.read_text())["reason"]


# --- verify ------------------------------------------------------------------------------

DAMAGE = {
    "model_12.pt": "zip",
    "model_16.pt": "nan",
    "model_20.pt": "missing keys: model_state_dict, optimizer_state_dict, scheduler_state_dict",
    "model_24.pt": "step mismatch: name says 24, content says 8",
    "model_28.pt": "empty",
    "model_36.pt": "missing key: step|update",
    PRETRAINED: "missing keys",
}
# model_32 was written before v0.4.0: its counter is `step`, which the trainer reads too.
GOOD = {"model_4.pt": 4, "model_8.pt": 8, "model_last.pt": 8, "model_32.pt": 32}


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the twin wrote (model_4, model_8, model_last, the pretrained copy), plus damage."""
    root = f5_root(tmp_path_factory.mktemp("verify"))
    assert run_alone(root, argv(last=2, save=4, update_s=0.01)).returncode == 0
    ckpts = root / "ckpts" / "ds"
    good: dict[str, Any] = torch.load(ckpts / "model_8.pt", weights_only=True)
    data = (ckpts / "model_8.pt").read_bytes()
    (ckpts / "model_12.pt").write_bytes(data[: len(data) // 2])
    nan_weights = {k: torch.full_like(v, math.nan) for k, v in good["model_state_dict"].items()}
    torch.save({**good, "update": 16, "model_state_dict": nan_weights}, ckpts / "model_16.pt")
    torch.save({"ema_model_state_dict": good["ema_model_state_dict"]}, ckpts / "model_20.pt")  # pruned
    (ckpts / "model_24.pt").write_bytes(data)
    (ckpts / "model_28.pt").write_bytes(b"")
    legacy = {k: v for k, v in good.items() if k != "update"}
    torch.save({**legacy, "step": 32}, ckpts / "model_32.pt")  # written before v0.4.0
    torch.save(legacy, ckpts / "model_36.pt")  # no counter at all
    (ckpts / PRETRAINED).write_bytes((root / "pretrained" / PRETRAINED).read_bytes())
    return ckpts


@pytest.fixture(scope="module")
def verified(checkpoint_dir: Path) -> dict[str, dict[str, Any]]:
    """One `verify` over every file (one validator start, not one per file)."""
    names = [*GOOD, *DAMAGE, f"pretrained_{PRETRAINED}"]
    result = run_cli("verify", "--adapter", "f5-tts", "--json", *(str(checkpoint_dir / n) for n in names))
    return {Path(r["path"]).name: r for r in map(json.loads, result.stdout.splitlines())}


@pytest.mark.slow
def test_verify_good_files_model_last_by_its_content(verified: dict[str, dict[str, Any]]) -> None:
    assert {n: (verified[n]["ok"], verified[n]["step"]) for n in GOOD} == {
        n: (True, s) for n, s in GOOD.items()
    }


def test_verify_says_the_pretrained_copy_is_not_a_resume_point(verified: dict[str, dict[str, Any]]) -> None:
    result = verified[f"pretrained_{PRETRAINED}"]
    assert result["ok"] is False
    assert "not a resume checkpoint" in result["reason"]
    assert "pretrained EMA weights" in result["reason"]


@pytest.mark.parametrize(("name", "reason"), DAMAGE.items())
def test_verify_rejects_damage(verified: dict[str, dict[str, Any]], name: str, reason: str) -> None:
    assert verified[name]["ok"] is False
    assert reason in verified[name]["reason"].lower(), verified[name]["reason"]
