"""The configuration's model: the pydantic sections, their defaults and their checks."""

from __future__ import annotations

import ipaddress
import math
import signal
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

import trainer_adapters
from supervisor.config.run_place import DEFAULT_MAX_ATTEMPTS_WITHOUT_PROGRESS, RUN_NAME, trainer_log_in
from supervisor.core.health import Remedy
from trainer_adapters.base import AdapterOptions


def _number(value: object) -> object:
    # TOML gives ints and floats; a quoted "3", a boolean or inf/nan is a mistake worth naming.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError("expected a finite number")
    return value


Seconds = Annotated[float, BeforeValidator(_number), Field(ge=0)]
Count = Annotated[int, Field(strict=True)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RunSection(Section):
    name: str | None = None
    command: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)
    cwd: Path | None = None
    env: dict[str, str] = Field(default_factory=dict)
    state_dir: Path | None = None

    @field_validator("name")
    @classmethod
    def _valid_name(cls, name: str | None) -> str | None:
        if name is not None and not RUN_NAME.match(name):
            raise ValueError(
                "use letters, digits, '.', '_' and '-' (at most 64, starting with a letter or digit)"
            )
        return name


class AdapterSection(Section):
    name: str = "generic"
    checkpoint_dir: Path | None = None
    options: AdapterOptions = Field(default_factory=AdapterOptions)


class RestartSection(Section):
    backoff_initial_s: Seconds = 10.0
    backoff_max_s: Seconds = 600.0
    backoff_factor: Annotated[float, BeforeValidator(_number), Field(ge=1)] = 2.0
    jitter: Annotated[float, BeforeValidator(_number), Field(ge=0, le=1)] = 0.2
    # > 0: with 0 every attempt would count as progress and a crash loop would never end.
    stable_after_s: Annotated[float, BeforeValidator(_number), Field(gt=0)] = 300.0
    max_attempts_without_progress: Annotated[Count, Field(ge=1)] = DEFAULT_MAX_ATTEMPTS_WITHOUT_PROGRESS

    @model_validator(mode="after")
    def _max_not_below_initial(self) -> RestartSection:
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError(
                f"backoff_max_s ({self.backoff_max_s:g}) must be >= backoff_initial_s "
                f"({self.backoff_initial_s:g})"
            )
        return self


class HeartbeatSection(Section):
    # "auto": watch for hangs where progress can be read (the adapter's progress lines,
    # or heartbeats once the first arrives); "on": from launch, whatever the source
    # (checkpoints landing count); "off": never.
    mode: Literal["auto", "on", "off"] = "auto"
    timeout_s: Annotated[float, BeforeValidator(_number), Field(gt=0)] = 1800.0
    # Unset means max(3600, timeout_s): importing and loading data can take minutes.
    startup_timeout_s: Annotated[float, BeforeValidator(_number), Field(gt=0)] | None = None
    # > 0: the budget becomes learn_factor x the longest interval seen between signs of
    # progress (kept across restarts), at least learn_min_s and at most timeout_s.
    learn_factor: Annotated[float, BeforeValidator(_number), Field(ge=0)] = 0.0
    learn_min_s: Annotated[float, BeforeValidator(_number), Field(gt=0)] = 120.0

    @model_validator(mode="after")
    def _startup_not_below_timeout(self) -> HeartbeatSection:
        if self.startup_timeout_s is not None and self.startup_timeout_s < self.timeout_s:
            raise ValueError(
                f"startup_timeout_s ({self.startup_timeout_s:g}) must be >= timeout_s ({self.timeout_s:g})"
            )
        return self

    @property
    def effective_startup_timeout_s(self) -> float:
        return self.startup_timeout_s if self.startup_timeout_s is not None else max(3600.0, self.timeout_s)


class RemedySection(Section):
    """Overrides a relaunch runs with: environment variables, and flags whose value is
    replaced in the command (or appended with it where the command lacks the flag)."""

    env: dict[str, str] = Field(default_factory=dict)
    args: dict[Annotated[str, Field(pattern=r"^-")], str] = Field(default_factory=dict)

    def remedy(self, name: str) -> Remedy:
        return Remedy(name, tuple(self.env.items()), tuple(self.args.items()))


EXPANDABLE_SEGMENTS = RemedySection(env={"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"})


class NanSection(Section):
    # Consecutive non-finite loss readings that mean the run went bad. Unset: 1, or 3
    # where the adapter knows the trainer uses fp16 loss scaling (which skips single steps).
    tolerance: Annotated[Count, Field(ge=1)] | None = None
    # Rollbacks without getting past the step where it went bad, before giving up.
    max_rollbacks: Annotated[Count, Field(ge=0)] = 3
    remedy: RemedySection | None = None  # applied to every relaunch after a NaN


class OomSection(Section):
    # The remedy ladder: after the n-th out-of-memory end, rungs 1..n apply together.
    cuda_remedies: list[RemedySection] = Field(default_factory=lambda: [EXPANDABLE_SEGMENTS])
    host_remedies: list[RemedySection] = Field(default_factory=list)
    # cgroup v2 memory.events to read oom_kill counts from; unset: the supervisor's own cgroup.
    memory_events: Path | None = None


class DriftSection(Section):
    # What a relaunch does when the trainer's config files changed since the last launch.
    policy: Literal["warn", "refuse"] = "warn"
    # The files to fingerprint, relative to run.cwd; unset: what the adapter reads from the command.
    files: list[Path] | None = None


class GpuSection(Section):
    # "auto": NVML (nvidia-ml-py) when it works, else nothing; "nvml": required; "off".
    probe: Literal["auto", "nvml", "off"] = "auto"
    # Before a relaunch: how long to wait for the last attempt's processes to leave the GPU.
    release_timeout_s: Seconds = 60.0
    poll_s: Annotated[float, BeforeValidator(_number), Field(gt=0)] = 1.0
    # Longest one NVML call may take (a sick GPU can hang it forever).
    call_timeout_s: Annotated[float, BeforeValidator(_number), Field(gt=0)] = 5.0


NOTIFIABLE = (
    "crash",
    "hang",
    "nan",
    "oom-host",
    "oom-cuda",
    "silent-reset",
    "not-retryable",
    "interrupted",
    "quarantined",
    "disk_space",
    "gave_up",
    "completed",
)


class WebhookSection(Section):
    # The URL, or the environment variable holding it (a URL with a token in it is a
    # secret: keep it out of the config). Never logged beyond its scheme and host.
    url: str | None = None
    url_env: str | None = None
    # "json": {run, event, attempt, message, held_back, at}; "ntfy": a text body with a
    # title; "slack": {"text", "content"} (Slack and Discord incoming webhooks).
    format: Literal["json", "ntfy", "slack"] = "json"
    events: list[Literal[NOTIFIABLE]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: [e for e in NOTIFIABLE if e != "interrupted"]
    )
    # At most one message per this many seconds (give-up and completion always go out).
    min_interval_s: Seconds = 60.0
    token_env: str | None = None  # an environment variable holding a bearer token
    timeout_s: Annotated[float, BeforeValidator(_number), Field(gt=0)] = 10.0

    @model_validator(mode="after")
    def _one_url(self) -> WebhookSection:
        if (self.url is None) == (self.url_env is None):
            raise ValueError("give exactly one of url and url_env")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https:// (got {shown_url(self.url)})")
        return self


class NotifySection(Section):
    webhooks: list[WebhookSection] = Field(default_factory=list)


class StopSection(Section):
    grace_s: Seconds = 30.0
    signal: str = "SIGTERM"

    @field_validator("signal")
    @classmethod
    def _known_signal(cls, name: str) -> str:
        return signal_name(name)


class CheckpointsSection(Section):
    # A file counts as landed once its size and mtime stayed unchanged this long.
    quiet_s: Seconds = 2.0
    # A full rescan of the checkpoint directory catches events the OS did not deliver.
    rescan_s: Annotated[float, BeforeValidator(_number), Field(gt=0)] = 60.0
    # Poll instead of inotify (network filesystems: NFS, Lustre, CIFS).
    force_polling: bool = False
    # Verified copies kept in state_dir/verified (0 = none): what a torn re-save or an
    # overwritten "latest" file is restored from.
    keep_verified: Annotated[Count, Field(ge=0)] = 2
    # Longest validation of one file; a validator that takes longer is killed.
    validation_timeout_s: Annotated[float, BeforeValidator(_number), Field(gt=0)] = 600.0
    # Memory limit of the validator process (MiB); 0 = no limit.
    validator_memory_mb: Annotated[Count, Field(ge=0)] = 4096
    # How long a relaunch waits for checkpoints that are still being written or verified.
    verify_wait_s: Seconds = 900.0
    # When the trainer says it saved a checkpoint (its adapter's "saved" lines) and no
    # checkpoint lands in checkpoint_dir within this, the supervisor warns loudly: the
    # directory is not where the trainer writes.
    save_landing_grace_s: Annotated[float, BeforeValidator(_number), Field(gt=0)] = 300.0
    # Warn before a relaunch when the checkpoint filesystem has less free space (GB).
    min_free_gb: Seconds = 5.0
    # Free space (MiB) kept on the state_dir filesystem for the ledger and the notes: a
    # verified copy that would leave less is not made (warned once; supervision goes on).
    state_reserve_mb: Annotated[Count, Field(ge=0)] = 512
    # Add to torch's safe globals, inside the trainer's process (a sitecustomize on its
    # PYTHONPATH), exactly the globals the validator allows in this trainer's checkpoints
    # (GPT-SoVITS s1: pathlib.PosixPath), so that its weights-only torch.load resumes.
    trainer_safe_globals: bool = False


class LogsSection(Section):
    max_bytes: Annotated[Count, Field(ge=4096)] = 50 * 1024 * 1024
    backups: Annotated[Count, Field(ge=0)] = 5


class MetricsSection(Section):
    # Prometheus metrics on http://<bind>:<port>/metrics; 0 = off. Loopback addresses only:
    # the endpoint has no authentication (put a proxy in front to expose it further).
    port: Annotated[Count, Field(ge=0, le=65535)] = 0
    bind: str = "127.0.0.1"

    @field_validator("bind")
    @classmethod
    def _loopback_only(cls, bind: str) -> str:
        try:
            address = ipaddress.ip_address(bind)
        except ValueError:
            raise ValueError("expected an IP address, e.g. 127.0.0.1 or ::1") from None
        if not address.is_loopback:
            raise ValueError(
                "only a loopback address (127.0.0.0/8 or ::1): the metrics have no authentication"
            )
        return bind


class HousekeepingSection(Section):
    # Periodic chores (APScheduler in the daemon's loop); 0 turns one off. The full rescan
    # of the checkpoint directory runs every [checkpoints] rescan_s.
    status_every_s: Seconds = 600.0  # a "status" log line: where the run stands
    disk_check_s: Seconds = 300.0  # free space vs [checkpoints] min_free_gb, warned once per dip
    retention_s: Seconds = 3600.0  # verified copies kept to [checkpoints] keep_verified


class Config(Section):
    """A loaded config. All paths are absolute and `run.name` is always set."""

    path: Path
    run: RunSection
    adapter: AdapterSection = Field(default_factory=AdapterSection)
    restart: RestartSection = Field(default_factory=RestartSection)
    heartbeat: HeartbeatSection = Field(default_factory=HeartbeatSection)
    nan: NanSection = Field(default_factory=NanSection)
    oom: OomSection = Field(default_factory=OomSection)
    drift: DriftSection = Field(default_factory=DriftSection)
    gpu: GpuSection = Field(default_factory=GpuSection)
    notify: NotifySection = Field(default_factory=NotifySection)
    stop: StopSection = Field(default_factory=StopSection)
    checkpoints: CheckpointsSection = Field(default_factory=CheckpointsSection)
    logs: LogsSection = Field(default_factory=LogsSection)
    metrics: MetricsSection = Field(default_factory=MetricsSection)
    housekeeping: HousekeepingSection = Field(default_factory=HousekeepingSection)

    @property
    def name(self) -> str:
        assert self.run.name is not None
        return self.run.name

    @property
    def cwd(self) -> Path:
        assert self.run.cwd is not None
        return self.run.cwd

    @property
    def state_dir(self) -> Path:
        assert self.run.state_dir is not None
        return self.run.state_dir

    @property
    def trainer_log(self) -> Path:
        """Where the trainer's stdout and stderr go (rotated beside it)."""
        return trainer_log_in(self.state_dir)


def nan_tolerance(config: Config) -> int:
    """[nan] tolerance, or its default: 3 where the trainer uses fp16 loss scaling."""
    if config.nan.tolerance is not None:
        return config.nan.tolerance
    return 3 if trainer_adapters.get(config.adapter.name).fp16_loss_scaling else 1


def signal_name(name: str) -> str:
    """Normalise 'TERM', 'sigterm' or '15' to 'SIGTERM'; ValueError if unknown."""
    text = name.strip().upper()
    try:
        sig = (
            signal.Signals(int(text))
            if text.isdigit()
            else signal.Signals[text if text.startswith("SIG") else f"SIG{text}"]
        )
    except (KeyError, ValueError):
        raise ValueError(f"unknown signal {name!r}; e.g. SIGTERM or SIGINT") from None
    return sig.name


def shown_url(url: str) -> str:
    """A URL as it may be shown: scheme and host, never its path, query or credentials."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return "an unparsable URL"
    return f"{parts.scheme or '?'}://{host or '?'}"
