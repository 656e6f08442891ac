"""Config loading: defaults, resolution, and one clear message for every kind of mistake."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from supervisor import config as config_module
from supervisor.config import ConfigError, load, signal_name, to_toml
from tests.support.load import scaled
from trainer_adapters.generic import GenericOptions

ROOT = Path(__file__).parents[2]
CLI = [sys.executable, "-m", "supervisor.cli"]


def write(tmp_path: Path, text: str, name: str = "run.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


MINIMAL = """
[run]
command = ["python3", "train.py"]
state_dir = "state"
"""


def test_minimal_config_gets_sensible_defaults(tmp_path: Path) -> None:
    config = load(write(tmp_path, MINIMAL, "my-run.toml"))
    assert config.name == "my-run"
    assert config.cwd == tmp_path
    assert config.state_dir == tmp_path / "state"
    assert config.adapter.name == "generic"
    assert config.restart.backoff_initial_s == 10.0
    assert config.restart.max_attempts_without_progress == 5
    assert config.stop.signal == "SIGTERM"
    assert config.heartbeat.effective_startup_timeout_s >= config.heartbeat.timeout_s


def test_all_documented_keys_load_and_resolve(tmp_path: Path) -> None:
    (tmp_path / "repo").mkdir()
    path = write(
        tmp_path,
        """
[run]
name = "vits-ljs"
command = ["python3", "train.py", "-c", "configs/ljs.json"]
cwd = "repo"
env = { CUDA_VISIBLE_DEVICES = "0" }
state_dir = "/var/tmp/ts-state"

[adapter]
name = "generic"
checkpoint_dir = "logs/ljs"

[restart]
backoff_initial_s = 0
backoff_max_s = 300.5
backoff_factor = 3
jitter = 0.5
stable_after_s = 120
max_attempts_without_progress = 2

[heartbeat]
timeout_s = 600
startup_timeout_s = 1200.0

[stop]
grace_s = 3
signal = "int"
""",
    )
    config = load(path)
    assert config.name == "vits-ljs"
    assert config.cwd == tmp_path / "repo"
    assert config.adapter.checkpoint_dir == tmp_path / "repo" / "logs" / "ljs"
    assert config.state_dir == Path("/var/tmp/ts-state")
    assert config.run.env == {"CUDA_VISIBLE_DEVICES": "0"}
    assert config.restart.backoff_initial_s == 0.0
    assert config.restart.backoff_factor == 3.0
    assert config.stop.grace_s == 3.0
    assert config.stop.signal == "SIGINT"
    assert config.heartbeat.effective_startup_timeout_s == 1200.0


def test_generic_adapter_options(tmp_path: Path) -> None:
    text = MINIMAL + '[adapter]\nname = "generic"\ncheckpoint_dir = "ckpt"\npattern = "step_{step}.pt"\n'
    text += 'required_keys = ["model"]\nstep_key = "step"\n'
    options = load(write(tmp_path, text)).adapter.options
    assert options == GenericOptions(pattern="step_{step}.pt", required_keys=("model",), step_key="step")


def test_the_example_config_loads() -> None:
    config = load(ROOT / "config.example.toml")
    assert config.name == "example"
    assert config.run.env == {"CUDA_VISIBLE_DEVICES": "0"}


def test_the_effective_config_is_valid_toml_that_loads_the_same(tmp_path: Path) -> None:
    config = load(write(tmp_path, MINIMAL + "[run.env]\nA = 'x \"y\"'\n"))
    text = to_toml(config)
    parsed = tomllib.loads(text)
    assert parsed["run"]["command"] == ["python3", "train.py"]
    assert parsed["restart"]["backoff_max_s"] == 600.0
    assert parsed["run"]["env"] == {"A": 'x "y"'}
    again = load(write(tmp_path, text, "again.toml"))
    assert again.restart == config.restart
    assert again.state_dir == config.state_dir


def test_state_dir_defaults_to_xdg_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    config = load(write(tmp_path, '[run]\ncommand = ["python3"]\n', "abc.toml"))
    assert config.state_dir == tmp_path / "xdg" / "train-supervisor" / "abc"
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/train-supervisor")
    assert config_module.default_state_dir("abc") == Path("/var/lib/train-supervisor/abc")


@pytest.mark.parametrize(
    ("name", "expected"),
    [("TERM", "SIGTERM"), ("sigint", "SIGINT"), ("9", "SIGKILL"), (" SIGUSR1 ", "SIGUSR1")],
)
def test_signal_names_are_normalised(name: str, expected: str) -> None:
    assert signal_name(name) == expected


BAD_CONFIGS = {
    "toml-syntax": ("[run\ncommand = []", "TOML syntax error"),
    "unknown-key": (MINIMAL + "[restart]\nbakoff_initial_s = 3\n", "restart.bakoff_initial_s: unknown key"),
    "unknown-table": (MINIMAL + "[restrat]\n", "restrat: unknown key"),
    "wrong-type": (
        MINIMAL + '[restart]\nbackoff_initial_s = "3"\n',
        "restart.backoff_initial_s: expected a number",
    ),
    "bool-duration": (MINIMAL + "[stop]\ngrace_s = true\n", "stop.grace_s: expected a number"),
    "negative-backoff": (MINIMAL + "[restart]\nbackoff_initial_s = -1\n", "restart.backoff_initial_s"),
    "max-below-initial": (
        MINIMAL + "[restart]\nbackoff_initial_s = 50\nbackoff_max_s = 5\n",
        "backoff_max_s (5)",
    ),
    "jitter-range": (MINIMAL + "[restart]\njitter = 1.5\n", "restart.jitter"),
    "float-count": (
        MINIMAL + "[restart]\nmax_attempts_without_progress = 2.5\n",
        "max_attempts_without_progress",
    ),
    "empty-command": ('[run]\ncommand = []\nstate_dir = "s"\n', "run.command"),
    "empty-arg": ('[run]\ncommand = ["python3", ""]\nstate_dir = "s"\n', "run.command[1]"),
    "missing-command": ('[run]\nstate_dir = "s"\n', "run.command: required key is missing"),
    "missing-run": ("[restart]\njitter = 0.1\n", "run: required key is missing"),
    "no-such-cwd": (MINIMAL + 'cwd = "does/not/exist"\n', "run.cwd: directory does not exist"),
    "no-such-program": (
        '[run]\ncommand = ["no-such-trainer-xyz"]\nstate_dir = "s"\n',
        "was not found on PATH",
    ),
    "no-such-script-path": ('[run]\ncommand = ["./train.sh"]\nstate_dir = "s"\n', "not an executable file"),
    "bad-signal": (MINIMAL + '[stop]\nsignal = "SIGNOPE"\n', "stop.signal: unknown signal"),
    "bad-name": ('[run]\nname = "a b"\ncommand = ["python3"]\n', "run.name"),
    "unknown-adapter": (MINIMAL + '[adapter]\nname = "nope"\n', "adapter.name: unknown adapter 'nope'"),
    "unknown-adapter-key": (MINIMAL + '[adapter]\npatern = "x"\n', "adapter.patern: unknown key"),
    "startup-below-timeout": (
        MINIMAL + "[heartbeat]\ntimeout_s = 100\nstartup_timeout_s = 10\n",
        "startup_timeout_s (10) must be >= timeout_s (100)",
    ),
    "env-not-string": (MINIMAL + "[run.env]\nCUDA_VISIBLE_DEVICES = 0\n", "run.env.CUDA_VISIBLE_DEVICES"),
    "infinite-duration": (MINIMAL + "[restart]\nbackoff_max_s = inf\n", "expected a finite number"),
    "nan-duration": (MINIMAL + "[stop]\ngrace_s = nan\n", "stop.grace_s: expected a finite number"),
    "zero-stable-after": (MINIMAL + "[restart]\nstable_after_s = 0\n", "restart.stable_after_s"),
    "top-level-path": ('path = "/etc"\n' + MINIMAL, "path: unknown key"),
    "cwd-is-a-file": (MINIMAL + 'cwd = "run.toml"\n', "run.cwd: not a directory"),
    "typo-suggestion": (MINIMAL + "[restart]\nbackof_max_s = 3\n", "(did you mean backoff_max_s?)"),
    "latest-without-step-key": (MINIMAL + '[adapter]\nlatest = "last.pt"\n', "latest needs step_key"),
    "unknown-key-lists-keys": (MINIMAL + "[stop]\nwhatever = 3\n", "(expected one of: grace_s, signal)"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_names_the_key(tmp_path: Path, case: str) -> None:
    text, expected = BAD_CONFIGS[case]
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, text))
    assert expected in str(info.value)
    assert str(tmp_path / "run.toml") in str(info.value)


def test_several_problems_are_listed_together(tmp_path: Path) -> None:
    text = MINIMAL + '[adapter]\npatern = "x"\n[restart]\nbackoff_initial_s = -1\njitter = 2\nbogus = 1\n'
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, text))
    assert len(info.value.problems) == 4
    assert "4 problems" in str(info.value)
    assert "adapter.patern: unknown key (did you mean pattern?)" in info.value.problems


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load(tmp_path / "nope.toml")


def _launch_marker_config(tmp_path: Path, extra: str) -> tuple[Path, Path]:
    """A config whose trainer would leave a file behind if it were ever launched."""
    marker = tmp_path / "launched"
    command = f'["{sys.executable}", "-c", "open(\'{marker}\', \'w\')"]'
    return write(tmp_path, f'[run]\ncommand = {command}\nstate_dir = "state"\n{extra}'), marker


@pytest.mark.parametrize(
    "extra",
    [
        "[restart]\nbackoff_initial_s = -1\n",
        "[restart]\nunknown = 1\n",
        "[stop]\ngrace_s = 'soon'\n",
        "[run.env]\nX = 1\n",
        "[restart\n",
    ],
    ids=["negative-backoff", "unknown-key", "wrong-type", "env-type", "syntax"],
)
@pytest.mark.slow
def test_cli_run_with_a_bad_config_exits_2_with_one_message_and_starts_nothing(
    tmp_path: Path, extra: str
) -> None:
    path, marker = _launch_marker_config(tmp_path, extra)
    result = subprocess.run(
        [*CLI, "run", "-c", str(path)], capture_output=True, text=True, timeout=scaled(60), check=False
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"train-supervisor: config {path}")
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert not marker.exists()
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize(
    ("run_table", "expected"),
    [
        ("command = []", "run.command"),
        ('command = ["{python}", "-c", "{launch}"]\ncwd = "nowhere"', "run.cwd: directory does not exist"),
    ],
    ids=["empty-command", "no-such-cwd"],
)
@pytest.mark.slow
def test_cli_run_rejects_a_bad_run_table_and_starts_nothing(
    tmp_path: Path, run_table: str, expected: str
) -> None:
    marker = tmp_path / "launched"
    run_table = run_table.format(python=sys.executable, launch=f"open('{marker}', 'w')")
    path = write(tmp_path, f'[run]\n{run_table}\nstate_dir = "state"\n')
    result = subprocess.run(
        [*CLI, "run", "-c", str(path)], capture_output=True, text=True, timeout=scaled(60), check=False
    )
    assert result.returncode == 2
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not marker.exists()
    assert not (tmp_path / "state").exists()


def test_cli_run_with_a_missing_config_file(tmp_path: Path) -> None:
    result = subprocess.run(
        [*CLI, "run", "-c", str(tmp_path / "nope.toml")],
        capture_output=True,
        text=True,
        timeout=scaled(60),
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"train-supervisor: config {tmp_path / 'nope.toml'}: file not found"


def test_cli_config_check_prints_the_effective_config(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    result = subprocess.run(
        [*CLI, "config", "check", "-c", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    parsed = tomllib.loads(result.stdout)
    assert parsed["run"]["name"] == "run"
    assert parsed["run"]["state_dir"] == str(tmp_path / "state")
    assert parsed["stop"]["signal"] == "SIGTERM"


@pytest.mark.slow
def test_cli_usage_errors_exit_2(tmp_path: Path) -> None:
    result = subprocess.run([*CLI, "run"], capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert "Missing option '-c'" in result.stderr
    result = subprocess.run([*CLI, "frobnicate"], capture_output=True, text=True, check=False)
    assert result.returncode == 2


def test_the_example_documents_every_key_in_its_table() -> None:
    documented: dict[str, set[str]] = {}
    table = ""
    for line in (ROOT / "config.example.toml").read_text().splitlines():
        text = line.lstrip("# ").strip()
        if text.startswith("[") and text.endswith("]") and " " not in text:
            table = text.strip("[]")
            documented.setdefault(table, set())
        elif "=" in text and table:
            documented[table].add(text.split("=")[0].strip())
    documented["run"] |= {"env"} if "run.env" in documented else set()
    expected = {
        "run": config_module.RunSection.model_fields,
        "adapter": ["name", "checkpoint_dir", *GenericOptions.model_fields],
        "restart": config_module.RestartSection.model_fields,
        "heartbeat": config_module.HeartbeatSection.model_fields,
        "nan": config_module.NanSection.model_fields,
        "oom": config_module.OomSection.model_fields,
        "drift": config_module.DriftSection.model_fields,
        "gpu": config_module.GpuSection.model_fields,
        "notify": config_module.NotifySection.model_fields,
        "notify.webhooks": config_module.WebhookSection.model_fields,
        "stop": config_module.StopSection.model_fields,
        "checkpoints": config_module.CheckpointsSection.model_fields,
        "logs": config_module.LogsSection.model_fields,
        "metrics": config_module.MetricsSection.model_fields,
        "housekeeping": config_module.HousekeepingSection.model_fields,
    }
    for section, keys in expected.items():
        missing = set(keys) - documented.get(section, set())
        assert not missing, f"config.example.toml does not document {section}: {sorted(missing)}"


def test_every_adapter_has_a_page_that_documents_its_options() -> None:
    import trainer_adapters

    for name in trainer_adapters.names():
        adapter = trainer_adapters.get(name)
        page = ROOT / adapter.docs
        assert adapter.docs, f"{name}: no docs page"
        assert page.is_file(), f"{name}: {page} is missing"
        text = page.read_text()
        for key in adapter.options.model_fields:
            assert f"{key} =" in text or f"`{key}`" in text, f"{adapter.docs} does not document {key}"


def test_paths_are_absolute_and_without_dot_dot(tmp_path: Path) -> None:
    (tmp_path / "repo" / "logs").mkdir(parents=True)
    text = MINIMAL.replace("[run]\n", '[run]\ncwd = "conf/../repo"\n', 1)
    text += '[adapter]\nname = "vits"\ncheckpoint_dir = "logs/../logs/ljs"\n'
    config = load(write(tmp_path, text), for_launch=False)
    assert config.cwd == tmp_path / "repo"
    assert config.adapter.checkpoint_dir == tmp_path / "repo" / "logs" / "ljs"


def test_a_trainer_adapter_needs_its_checkpoint_dir(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, MINIMAL + '[adapter]\nname = "applio"\n'), for_launch=False)
    assert info.value.problems == [
        "adapter.checkpoint_dir: required for applio (where it writes checkpoints; see docs/trainers/applio.md)"
    ]


def test_the_adapter_checks_its_options_against_the_directory(tmp_path: Path) -> None:
    text = MINIMAL + '[adapter]\nname = "gpt-sovits-s2"\ncheckpoint_dir = "logs/exp/logs_s2_v4_lora_32"\n'
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, text), for_launch=False)
    (problem,) = info.value.problems
    assert problem.startswith("adapter.version: 'v2Pro', but logs_s2_v4_lora_32 holds a v4 run")
    assert load(write(tmp_path, text + 'version = "v4"\n'), for_launch=False).adapter.options
