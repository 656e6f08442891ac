"""The `gpt-sovits-s1` adapter: its model of s1_train.py's resume rule, its readings of the
Lightning output, and end to end with the real CLI around the layout twin
(tests/support/trainers/gpt_sovits_s1_twin.py)."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path, PosixPath, PurePosixPath
from typing import Any

import pytest
import torch

import trainer_adapters
from supervisor.checkpoints.plan import Candidate, Snapshot, Status, plan
from supervisor.ledger import EventRow, Ledger
from tests.support.load import scaled
from tests.support.twins import run_cli, status, trainer_output, twin_command, write_config, write_faults
from trainer_adapters.base import NamedCheckpoint, Said
from trainer_adapters.rules import read_line

ADAPTER = trainer_adapters.get("gpt-sovits-s1")
LAYOUT = ADAPTER.layout(ADAPTER.options())
CKPT = Path("/srv/GPT-SoVITS/logs/exp/logs_s1_v2Pro/ckpt")


def named(name: str, directory: Path = CKPT) -> NamedCheckpoint:
    found = LAYOUT.parse(directory / name)
    assert found is not None, name
    return found


# --- names, and the trainer's choice ---------------------------------------------------


def test_names_the_trainers_regex_matches_from_the_start() -> None:
    ckpt = named("epoch=14-step=3300.ckpt")
    assert (ckpt.role, ckpt.epoch, ckpt.step, ckpt.in_place, ckpt.content_step) == (
        "model",
        14,
        3300,
        False,
        False,
    )
    # re.match is anchored at the start only: a renamed leftover still counts, with its numbers.
    bad = named("epoch=3-step=9.ckpt.bad")
    assert (bad.epoch, bad.step) == (3, 9)
    assert LAYOUT.roles == ("model",)
    assert LAYOUT.recursive is False
    expect = LAYOUT.expect(ckpt)
    assert (expect.step_key, expect.epoch_key) == ("global_step", "epoch")
    assert {"state_dict", "optimizer_states", "lr_schedulers", "loops"} <= set(expect.required_keys)
    assert expect.allowed_globals == ("pathlib.PosixPath",)


@pytest.mark.parametrize(
    ("path", "why"),
    [
        (CKPT / "epoch=14-step=3300-v1.ckpt", "version suffix"),
        (Path("/srv/GPT-SoVITS/GPT_weights_v2Pro/exp-e15.ckpt"), "weights export"),
        (Path("/srv/GPT-SoVITS/GPT_SoVITS/pretrained_models/s1v3.ckpt"), "pretrained GPT weights"),
        (
            Path(
                "/srv/GPT-SoVITS/GPT_SoVITS/pretrained_models/s1bert25hz-2kh-longer-epoch=68e-step=50232.ckpt"
            ),
            "pretrained GPT weights",
        ),
        (Path("/srv/GPT-SoVITS/1723456789.123456.pth"), "temporary file"),
    ],
)
def test_what_is_not_a_resume_point(path: Path, why: str) -> None:
    assert LAYOUT.parse(path) is None
    assert why in (LAYOUT.ignored(path) or "")


def test_pick_is_the_max_by_epoch_then_step() -> None:
    files = [named(n) for n in ("epoch=9-step=900.ckpt", "epoch=10-step=5.ckpt", "epoch=2-step=99999.ckpt")]
    assert LAYOUT.pick(files)["model"].path.name == "epoch=10-step=5.ckpt"
    assert (
        LAYOUT.pick([*files, named("epoch=11-step=1.ckpt.bad")])["model"].path.name
        == "epoch=11-step=1.ckpt.bad"
    )
    assert LAYOUT.pick([]) == {}
    # A verified copy put back carries no epoch of its own: the name still orders it.
    restored = NamedCheckpoint(CKPT / "epoch=12-step=6.ckpt", "model", 6)
    assert LAYOUT.pick([*files, restored])["model"] is restored


def test_of_equal_numbers_the_first_listed_wins() -> None:
    # sorted(..., reverse=True)[0] keeps os.listdir order among equal keys.
    bad, good = named("epoch=3-step=9.ckpt.bad"), named("epoch=3-step=9.ckpt")
    assert LAYOUT.pick([bad, good])["model"] == bad
    assert LAYOUT.pick([good, bad])["model"] == good


def test_states_are_ordered_by_epoch_then_step_as_the_trainer_orders_them() -> None:
    # A step counter that went back (another run's file copied in, a batch size change):
    # the trainer takes the highest epoch, and so does the plan.
    files = [ok("epoch=9-step=50.ckpt"), ok("epoch=3-step=90.ckpt")]
    the_plan = plan(LAYOUT, files)
    assert the_plan.ok
    assert the_plan.target == {"model": CKPT / "epoch=9-step=50.ckpt"}


# --- the planner on realistic directories -----------------------------------------------


def ok(name: str) -> Candidate:
    return Candidate(named(name), Status.OK)


def bad(name: str, reason: str = "truncated") -> Candidate:
    return Candidate(named(name), Status.REJECTED, reason)


def test_plan_a_torn_newest_file_is_moved_aside() -> None:
    the_plan = plan(LAYOUT, [ok("epoch=1-step=4.ckpt"), bad("epoch=2-step=6.ckpt")])
    assert the_plan.ok
    assert the_plan.lands_on == {"model": CKPT / "epoch=1-step=4.ckpt"}
    assert [m.path.name for m in the_plan.moves] == ["epoch=2-step=6.ckpt"]


def test_plan_a_leftover_bad_name_is_moved_out_of_the_directory() -> None:
    the_plan = plan(LAYOUT, [ok("epoch=1-step=4.ckpt"), bad("epoch=5-step=12.ckpt.bad")])
    assert the_plan.ok
    assert [m.path.name for m in the_plan.moves] == ["epoch=5-step=12.ckpt.bad"]
    assert the_plan.lands_on["model"].name == "epoch=1-step=4.ckpt"


def test_plan_if_save_latest_left_one_bad_file_restore_the_verified_copy(tmp_path: Path) -> None:
    copy = tmp_path / "verified" / "epoch=1-step=4.ckpt"
    snaps = [Snapshot("model", 4, CKPT / "epoch=1-step=4.ckpt", copy)]
    the_plan = plan(LAYOUT, [bad("epoch=3-step=8.ckpt", "non-finite values")], snaps)
    assert the_plan.ok
    assert the_plan.target_step == 4
    assert [(r.copy, r.path) for r in the_plan.restores] == [(copy, CKPT / "epoch=1-step=4.ckpt")]
    assert the_plan.lands_on == {"model": CKPT / "epoch=1-step=4.ckpt"}


def test_plan_nothing_verified_means_the_fresh_start_from_pretrained() -> None:
    the_plan = plan(LAYOUT, [bad("epoch=0-step=2.ckpt")])
    assert the_plan.ok
    assert (the_plan.target_step, the_plan.lands_on) == (None, {})


# --- output lines ------------------------------------------------------------------------


def readings(line: str) -> list[tuple[Said, int | None, tuple[float, ...], str | None]]:
    return [(r.said, r.epoch, r.losses, r.path) for r in read_line(ADAPTER.lines, line)]


BAR = "Epoch 3:  18%|██████▉ | 5/28 [00:02<00:12,  1.91it/s, v_num=1, total_loss_step={}, lr_step=0.010, top_3_acc_step=0.183]"


@pytest.mark.parametrize(
    ("text", "value"),
    [("3.67e+3", 3670.0), ("0.712", 0.712), ("nan.0", math.nan), ("inf.0", math.inf), ("-inf.", -math.inf)],
)
def test_progress_and_loss_from_the_lightning_bar(text: str, value: float) -> None:
    found = read_line(ADAPTER.lines, BAR.format(text))
    assert [(r.said, r.epoch) for r in found] == [(Said.PROGRESS, 3), (Said.LOSS, 3)]
    (loss,) = found[1].losses
    assert loss == value or (math.isnan(loss) and math.isnan(value))
    assert found[1].nonfinite is not math.isfinite(value)


def test_the_epoch_columns_after_the_first_epoch_do_not_confuse_the_loss() -> None:
    line = BAR.format("2.5e+3")[:-1] + ", total_loss_epoch=nan.0, lr_epoch=0.010, top_3_acc_epoch=0.180]"
    assert readings(line)[1] == (Said.LOSS, 3, (2500.0,), None)


def test_loaded_fresh_start_and_completed_lines() -> None:
    path = "logs/exp/logs_s1_v2Pro/ckpt/epoch=4-step=10.ckpt"
    assert readings(f"Restored all states from the checkpoint at {path}") == [(Said.LOADED, None, (), path)]
    assert readings("ckpt_path: None") == [(Said.FRESH_START, None, (), None)]
    assert readings(f"ckpt_path: {path}") == []
    assert readings(f"Restoring states from the checkpoint path at {path}") == []
    assert readings("`Trainer.fit` stopped: `max_epochs=15` reached.") == [(Said.COMPLETED, None, (), None)]


@pytest.mark.parametrize(
    ("line", "explains"),
    [
        ("RuntimeError: Error(s) in loading state_dict for Text2SemanticLightningModule:", "pretrained_s1"),
        (
            "\tsize mismatch for model.ar_text_embedding.word_embeddings.weight: copying a param with shape "
            "torch.Size([322, 512]) from checkpoint, the shape in current model is torch.Size([732, 512]).",
            "strict load_state_dict",
        ),
        (
            "WeightsUnpickler error: Unsupported global: GLOBAL pathlib.PosixPath was not an allowed global by "
            "default. Please use `torch.serialization.add_safe_globals([pathlib.PosixPath])` or the "
            "`torch.serialization.safe_globals([pathlib.PosixPath])` context manager to allowlist this global "
            "if you trust this class/function.",
            "trainer_safe_globals = true",
        ),
        (
            "Unsupported global: GLOBAL pathlib._local.PosixPath was not an allowed global",
            "pytorch-lightning<2.6",
        ),
    ],
)
def test_fatal_lines_explain_themselves(line: str, explains: str) -> None:
    (reading,) = read_line(ADAPTER.lines, line)
    assert reading.said is Said.FATAL
    assert explains in reading.explain


def test_what_the_trainer_is_and_how_it_runs() -> None:
    assert ADAPTER.fp16_loss_scaling is True, "the shipped yamls train 16-mixed"
    assert ADAPTER.exit_codes_trusted is True
    assert ADAPTER.args == ()
    assert ADAPTER.launch is not None
    assert ADAPTER.launch.checkpoint_dir is None, "output_dir is in the yaml, not on the command line"
    assert "s1_train.py --config_file" in ADAPTER.launch.example


def test_recognises_s1_checkpoints_by_name_and_directory() -> None:
    for path in (
        CKPT / "epoch=14-step=3300.ckpt",
        Path("/x/logs/exp/logs_s1/ckpt/epoch=0-step=2.ckpt"),  # releases before v3: no version suffix
    ):
        assert ADAPTER.recognise is not None
        assert ADAPTER.recognise(path)
        assert trainer_adapters.detect(path) is ADAPTER
    for path in (
        Path("/x/lightning_logs/version_0/checkpoints/epoch=3-step=9.ckpt"),  # any other Lightning run
        Path("/x/GPT_weights_v2Pro/exp-e15.ckpt"),
        CKPT / "epoch=14-step=3300-v1.ckpt",
        Path("/x/logs/exp/logs_s2_v2Pro/G_233333333333.pth"),
        Path("/x/ckpts/ds/model_last.pt"),
    ):
        assert ADAPTER not in trainer_adapters.recognising(path), path


# --- end to end: the real CLI around the twin --------------------------------------------

OUT = "logs/exp/logs_s1_v2Pro"


def s1_root(
    tmp_path: Path,
    *,
    epochs: int = 4,
    if_save_latest: bool = True,
    batch_s: float = 0.05,
    **extra: Any,
) -> Path:
    """A GPT-SoVITS checkout as the WebUI leaves it: the config in TEMP/tmp_s1.yaml."""
    root = tmp_path / "GPT-SoVITS"
    (root / "TEMP").mkdir(parents=True)
    train = {
        "seed": 1234,
        "epochs": epochs,
        "save_every_n_epoch": 1,
        "precision": "16-mixed",
        "if_save_latest": if_save_latest,
        "if_save_every_weights": True,
        "half_weights_save_dir": "GPT_weights_v2Pro",
        "exp_name": "exp",
    }
    config = {"output_dir": OUT, "train": train, "twin": {"batches": 9, "batch_s": batch_s}, **extra}
    (root / "TEMP" / "tmp_s1.yaml").write_text(json.dumps(config))
    return root


ARGV = twin_command("gpt_sovits_s1_twin.py", "--config_file", "TEMP/tmp_s1.yaml")


def supervise(tmp_path: Path, root: Path, *, safe_globals: bool = True, **restart: Any) -> Path:
    """The test venv has Lightning 2.6+: its weights-only resume needs trainer_safe_globals."""
    return write_config(
        tmp_path,
        adapter="gpt-sovits-s1",
        command=ARGV,
        cwd=root,
        checkpoint_dir=f"{OUT}/ckpt",
        restart=restart,
        checkpoints={"trainer_safe_globals": safe_globals},
    )


def said_lines(tmp_path: Path) -> list[str]:
    starts = ("ckpt_path:", "Restored all states", "`Trainer.fit` stopped")
    return [line.replace(f"{OUT}/ckpt/", "") for line in trainer_output(tmp_path) if line.startswith(starts)]


def quarantined(tmp_path: Path) -> list[str]:
    found = sorted(p for p in (tmp_path / "state" / "quarantine").glob("*/*") if p.suffix != ".json")
    for path in found:
        note = json.loads(path.with_name(path.name + ".json").read_text())
        assert note["original_path"].endswith(f"{OUT}/ckpt/{path.name}")
    return [p.name for p in found]


def events(tmp_path: Path) -> list[EventRow]:
    ledger = Ledger.open_readonly(tmp_path / "state")
    assert ledger is not None
    try:
        return ledger.events(limit=1000)
    finally:
        ledger.close()


def run_alone(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(ARGV, cwd=root, capture_output=True, text=True, timeout=scaled(120), check=False)


@pytest.mark.slow
def test_left_alone_s1_crash_loops_on_a_torn_newest_checkpoint(tmp_path: Path) -> None:
    """The control experiment: the real trainer does not catch a load error."""
    root = s1_root(tmp_path, batch_s=0.01)
    write_faults(root, [{"at": 2, "kind": "torn"}])
    assert run_alone(root).returncode == -9
    again = run_alone(root)  # and so on, every time: nothing ever moves the file
    assert again.returncode == 1
    assert f"ckpt_path: {OUT}/ckpt/epoch=2-step=6.ckpt" in again.stdout
    assert "PytorchStreamReader failed reading zip archive" in again.stderr
    assert (root / OUT / "ckpt" / "epoch=2-step=6.ckpt").exists()


@pytest.mark.slow
def test_a_torn_newest_checkpoint_is_moved_aside_and_s1_resumes_from_the_one_before(tmp_path: Path) -> None:
    root = s1_root(tmp_path)
    write_faults(root, [{"at": 2, "kind": "torn"}])
    config = supervise(tmp_path, root)
    result = run_cli("run", "-c", str(config))
    assert result.returncode == 0, result.stdout[-3000:]
    assert said_lines(tmp_path) == [
        "ckpt_path: None",
        "ckpt_path: epoch=1-step=4.ckpt",
        "Restored all states from the checkpoint at epoch=1-step=4.ckpt",
        "`Trainer.fit` stopped: `max_epochs=4` reached.",
    ]
    assert quarantined(tmp_path) == ["epoch=2-step=6.ckpt"]
    data = status(config)
    assert [a["cause"] for a in data["attempts"]] == ["crash", "completed"]
    assert data["last_verified_step"] == 8
    assert sorted(p.name for p in (root / OUT / "ckpt").iterdir()) == ["epoch=3-step=8.ckpt"]
    said = [(e.attempt, e.kind) for e in events(tmp_path) if e.kind.startswith("trainer_")]
    assert said == [(1, "trainer_fresh_start"), (2, "trainer_loaded"), (2, "trainer_completed")]


@pytest.mark.slow
def test_if_save_latest_left_only_a_nan_file_the_verified_copy_is_restored(tmp_path: Path) -> None:
    # Attempt 1 saves epoch 1 and crashes (its verified copy is made before the relaunch).
    # Attempt 2 resumes; epoch 2 goes NaN: its save deletes epoch 1's file, epoch 3's save
    # deletes epoch 2's, then a crash. The one file left is NaN; the state to resume from
    # exists only as a verified copy.
    root = s1_root(tmp_path, epochs=5, batch_s=0.02)
    faults = [{"at": 1, "kind": "exception"}, {"at": 2, "kind": "nan"}, {"at": 3, "kind": "exception"}]
    write_faults(root, faults)
    # The NaN detector would stop attempt 2 at its first bad losses (test_detection); kept
    # out of it here, so the file that is left is NaN and only the verified copy is good.
    config = write_config(
        tmp_path,
        adapter="gpt-sovits-s1",
        command=ARGV,
        cwd=root,
        checkpoint_dir=f"{OUT}/ckpt",
        checkpoints={"trainer_safe_globals": True},
        more={"nan": {"tolerance": 10_000}},
    )
    result = run_cli("run", "-c", str(config))
    assert result.returncode == 0, result.stdout[-3000:]
    resumed = [
        "ckpt_path: epoch=1-step=4.ckpt",
        "Restored all states from the checkpoint at epoch=1-step=4.ckpt",
    ]
    assert said_lines(tmp_path) == [
        "ckpt_path: None",
        *resumed,
        *resumed,
        "`Trainer.fit` stopped: `max_epochs=5` reached.",
    ]
    assert quarantined(tmp_path) == ["epoch=3-step=8.ckpt"]
    summary = status(config)["last_plan"]["summary"]
    assert summary == (
        "resume from step 4 (epoch=1-step=4.ckpt); move aside 1: epoch=3-step=8.ckpt; restore 1: epoch=1-step=4.ckpt"
    )
    # The adapter's reading of the twin's bar: NaN losses before the crash, finite after.
    losses = [
        r for line in trainer_output(tmp_path) for r in read_line(ADAPTER.lines, line) if r.said is Said.LOSS
    ]
    assert {r.epoch for r in losses if r.nonfinite} == {2, 3}
    assert losses[-1].epoch == 4
    assert not losses[-1].nonfinite


@pytest.mark.slow
def test_a_leftover_bad_name_is_moved_out_of_the_directory(tmp_path: Path) -> None:
    root = s1_root(tmp_path, epochs=2, batch_s=0.01)
    assert run_alone(root).returncode == 0
    ckpt = root / OUT / "ckpt"
    data = (ckpt / "epoch=1-step=4.ckpt").read_bytes()
    (ckpt / "epoch=5-step=12.ckpt.bad").write_bytes(data[: len(data) // 2])  # "renamed so it is not used"
    (root / "TEMP" / "tmp_s1.yaml").write_text(
        (root / "TEMP" / "tmp_s1.yaml").read_text().replace('"epochs": 2', '"epochs": 3')
    )
    config = supervise(tmp_path, root)
    result = run_cli("run", "-c", str(config))
    assert result.returncode == 0, result.stdout[-3000:]
    assert said_lines(tmp_path) == [
        "ckpt_path: epoch=1-step=4.ckpt",
        "Restored all states from the checkpoint at epoch=1-step=4.ckpt",
        "`Trainer.fit` stopped: `max_epochs=3` reached.",
    ]
    assert quarantined(tmp_path) == ["epoch=5-step=12.ckpt.bad"]
    assert [a["cause"] for a in status(config)["attempts"]] == ["completed"]


@pytest.mark.slow
def test_a_mismatched_pretrained_model_ends_the_run_at_once(tmp_path: Path) -> None:
    pretrained = tmp_path / "s1v3.ckpt"
    # A pretrained model of another version: the same names, other shapes.
    torch.save({"weight": {"model.weight": torch.zeros(3, 2), "model.bias": torch.zeros(3)}}, pretrained)
    root = s1_root(tmp_path, pretrained_s1=str(pretrained))
    config = supervise(tmp_path, root)
    result = run_cli("run", "-c", str(config))
    assert result.returncode == 3, result.stdout[-3000:]
    data = status(config)
    assert [a["cause"] for a in data["attempts"]] == ["not-retryable"]
    assert "Point pretrained_s1 at the weights" in json.dumps(data)


@pytest.mark.slow
def test_a_weights_only_resume_is_refused_before_it_fails_then_allowed_exactly(tmp_path: Path) -> None:
    """Lightning 2.6+ (installed here) leaves torch to load weights-only; s1 checkpoints
    hold a pathlib path. Without trainer_safe_globals the plan refuses to promise that
    resume (it would crash every relaunch); with it, the unmodified trainer resumes."""
    root = s1_root(tmp_path, epochs=3, batch_s=0.01)
    write_faults(root, [{"at": 2, "kind": "exception"}])
    config = supervise(tmp_path, root, safe_globals=False)
    refused = run_cli("run", "-c", str(config))
    assert refused.returncode == 3, refused.stdout[-3000:]
    data = status(config)
    assert [a["cause"] for a in data["attempts"]] == ["crash"], "no doomed attempt was launched"
    text = json.dumps(data)
    assert "loads checkpoints weights-only" in text
    assert "trainer_safe_globals = true" in text
    assert not list((tmp_path / "state").glob("quarantine/*/*")), "the file is good: nothing is moved"

    allowed = supervise(tmp_path, root)
    result = run_cli("run", "-c", str(allowed), "--reset-counters")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "Restored all states from the checkpoint at" in "\n".join(said_lines(tmp_path))


# --- verify ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the twin wrote with if_save_latest off (epochs 0-2), plus damaged files."""
    root = s1_root(tmp_path_factory.mktemp("verify"), epochs=3, if_save_latest=False, batch_s=0.01)
    assert run_alone(root).returncode == 0
    ckpt = root / OUT / "ckpt"
    with torch.serialization.safe_globals([PosixPath]):
        good: dict[str, Any] = torch.load(ckpt / "epoch=2-step=6.ckpt", weights_only=True)
    data = (ckpt / "epoch=2-step=6.ckpt").read_bytes()
    (ckpt / "epoch=3-step=8.ckpt").write_bytes(data[: len(data) // 2])
    nan_weights = {k: torch.full_like(v, math.nan) for k, v in good["state_dict"].items()}
    torch.save(
        {**good, "epoch": 4, "global_step": 10, "state_dict": nan_weights}, ckpt / "epoch=4-step=10.ckpt"
    )
    lean = {k: v for k, v in good.items() if k != "optimizer_states"}
    torch.save({**lean, "epoch": 5, "global_step": 12}, ckpt / "epoch=5-step=12.ckpt")
    (ckpt / "epoch=7-step=6.ckpt").write_bytes(data)
    (ckpt / "epoch=2-step=7.ckpt").write_bytes(data)
    (ckpt / "epoch=8-step=16.ckpt").write_bytes(b"")
    (ckpt / "epoch=2-step=6.ckpt.bad").write_bytes(data)
    (ckpt / "epoch=2-step=6-v1.ckpt").write_bytes(data)
    hparams = {**good["hyper_parameters"], "output_dir": PurePosixPath(OUT)}
    torch.save(
        {**good, "epoch": 9, "global_step": 18, "hyper_parameters": hparams}, ckpt / "epoch=9-step=18.ckpt"
    )
    return ckpt


def verify(*paths: Path) -> list[dict[str, Any]]:
    result = run_cli("verify", "--adapter", "gpt-sovits-s1", "--json", *map(str, paths))
    return [json.loads(line) for line in result.stdout.splitlines()]


DAMAGE = {
    "epoch=3-step=8.ckpt": "zip",
    "epoch=4-step=10.ckpt": "nan",
    "epoch=5-step=12.ckpt": "missing key: optimizer_states",
    "epoch=7-step=6.ckpt": "epoch mismatch: name says 7, content says 2",
    "epoch=2-step=7.ckpt": "step mismatch: name says 7, content says 6",
    "epoch=8-step=16.ckpt": "empty",
    "epoch=9-step=18.ckpt": "unsafe global not allowed: pathlib.PurePosixPath",
}
GOOD = ("epoch=0-step=2.ckpt", "epoch=2-step=6.ckpt", "epoch=2-step=6.ckpt.bad")


@pytest.fixture(scope="module")
def verified(checkpoint_dir: Path) -> dict[str, dict[str, Any]]:
    """One `verify` over every file (one validator start, not one per file)."""
    export = checkpoint_dir.parents[3] / "GPT_weights_v2Pro" / "exp-e3.ckpt"
    names = [*GOOD, *DAMAGE, "epoch=2-step=6-v1.ckpt"]
    results = verify(*(checkpoint_dir / n for n in names), export)
    return {Path(r["path"]).name: r for r in results}


@pytest.mark.slow
def test_verify_good_files_and_a_leftover_that_would_load(verified: dict[str, dict[str, Any]]) -> None:
    assert [(verified[n]["ok"], verified[n]["epoch"], verified[n]["step"]) for n in GOOD] == [
        (True, 0, 2),
        (True, 2, 6),
        (True, 2, 6),
    ]


@pytest.mark.slow
def test_verify_without_an_adapter_tells_the_trainer_by_name_and_directory(checkpoint_dir: Path) -> None:
    plain = run_cli("verify", "--json", str(checkpoint_dir / "epoch=0-step=2.ckpt"))
    assert plain.returncode == 0, plain.stderr


def test_verify_says_what_is_not_a_resume_point(verified: dict[str, dict[str, Any]]) -> None:
    versioned, exported = verified["epoch=2-step=6-v1.ckpt"], verified["exp-e3.ckpt"]
    assert (versioned["ok"], exported["ok"]) == (False, False)
    assert "not a resume checkpoint" in versioned["reason"]
    assert "version suffix" in versioned["reason"]
    assert "weights export" in exported["reason"]


@pytest.mark.parametrize(("name", "reason"), DAMAGE.items())
def test_verify_rejects_damage(verified: dict[str, dict[str, Any]], name: str, reason: str) -> None:
    assert verified[name]["ok"] is False
    assert reason.lower() in verified[name]["reason"].lower(), verified[name]["reason"]
