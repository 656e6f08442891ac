"""The effective config as TOML (`config check`), with secrets redacted."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from supervisor.config.model import Config, WebhookSection, nan_tolerance, shown_url


def to_toml(config: Config) -> str:
    """The effective config (defaults filled in, paths resolved) as TOML."""
    tables: dict[str, dict[str, Any]] = {
        "run": config.run.model_dump(exclude={"env"}),
        "run.env": config.run.env,
        "adapter": {
            "name": config.adapter.name,
            "checkpoint_dir": config.adapter.checkpoint_dir,
            **config.adapter.options.model_dump(),
        },
        "restart": config.restart.model_dump(),
        "heartbeat": {
            **config.heartbeat.model_dump(),
            "startup_timeout_s": config.heartbeat.effective_startup_timeout_s,
        },
        "nan": {**config.nan.model_dump(), "tolerance": nan_tolerance(config)},
        "oom": config.oom.model_dump(),
        "drift": config.drift.model_dump(),
        "gpu": config.gpu.model_dump(),
        "notify": {"webhooks": [_redacted(h) for h in config.notify.webhooks]},
        "stop": config.stop.model_dump(),
        "checkpoints": config.checkpoints.model_dump(),
        "logs": config.logs.model_dump(),
        "metrics": config.metrics.model_dump(),
        "housekeeping": config.housekeeping.model_dump(),
    }
    out = [f"# effective config of {config.path}"]
    for table, values in tables.items():
        out.append(f"\n[{table}]")
        for key, value in values.items():
            if value is None:
                out.append(f"# {key} is not set")
            else:
                out.append(f"{_toml_key(key)} = {_toml_value(value)}")
    return "\n".join(out) + "\n"


def _redacted(hook: WebhookSection) -> dict[str, Any]:
    """A webhook as `config check` may print it: a URL shows its scheme and host only."""
    data = hook.model_dump(exclude_none=True)
    if hook.url is not None:
        data["url"] = f"{shown_url(hook.url)}/…"
    return data


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_value(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{text}"'
