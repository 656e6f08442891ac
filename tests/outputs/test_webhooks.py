"""Webhooks against a real HTTP server on 127.0.0.1: what a crash loop, a quarantine and
a completion send, in each format; secrets stay out of the logs; a failing webhook never
touches supervision."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from supervisor.ledger import Ledger
from supervisor.outputs.reporter import Reporter
from supervisor.outputs.webhooks import Notifications, Webhook
from tests.support.load import scaled
from tests.support.procs import behave

pytestmark = pytest.mark.timeout(90)
SECRET = "s3cr3t-token-do-not-log"


class Receiver(BaseHTTPRequestHandler):
    got: list[dict[str, Any]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.got.append({"path": self.path, "headers": dict(self.headers), "body": body.decode()})
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    got: list[dict[str, Any]] = []
    handler = type("Handler", (Receiver,), {"got": got})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", got
    httpd.shutdown()
    httpd.server_close()


def run(tmp_path: Path, webhooks: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "run.toml"
    command = behave("crash-until", str(tmp_path / "starts"), "3")
    config.write_text(
        f"[run]\ncommand = {json.dumps(command)}\nstate_dir = {json.dumps(str(tmp_path / 'state'))}\n"
        "[restart]\nbackoff_initial_s = 0\nbackoff_max_s = 0\n" + webhooks
    )
    return subprocess.run(
        [sys.executable, "-m", "supervisor.cli", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=scaled(60),
        check=False,
        env={**os.environ, **env},
    )


@pytest.mark.slow
def test_crashes_and_the_completion_reach_each_format(
    tmp_path: Path, server: tuple[str, list[dict[str, Any]]]
) -> None:
    url, got = server
    hooks = (
        f'[[notify.webhooks]]\nurl = "{url}/json"\nmin_interval_s = 0\n'
        f'[[notify.webhooks]]\nurl_env = "NTFY_URL"\nformat = "ntfy"\nmin_interval_s = 0\n'
        f'[[notify.webhooks]]\nurl = "{url}/slack"\nformat = "slack"\ntoken_env = "HOOK_TOKEN"\n'
        "min_interval_s = 3600\n"
    )
    result = run(tmp_path, hooks, {"NTFY_URL": f"{url}/ntfy-topic", "HOOK_TOKEN": SECRET})
    assert result.returncode == 0, result.stdout[-2000:]
    by_path: dict[str, list[dict[str, Any]]] = {}
    for request in got:
        by_path.setdefault(request["path"], []).append(request)
    events = [json.loads(r["body"])["event"] for r in by_path["/json"]]
    assert events == ["crash", "crash", "completed"]
    first = json.loads(by_path["/json"][0]["body"])
    assert first["attempt"] == 1
    assert first["message"].startswith("attempt 1 ended: crash (exit code 1")
    ntfy = by_path["/ntfy-topic"]
    assert [r["headers"]["Tags"] for r in ntfy] == ["crash", "crash", "completed"]
    assert ntfy[0]["headers"]["Priority"] == "high"
    assert ntfy[0]["body"].startswith("[run] attempt 1 ended: crash")
    # The slack hook allows one message an hour: the first crash, then (always) the completion,
    # which counts the crash it held back.
    slack = [json.loads(r["body"]) for r in by_path["/slack"]]
    assert len(slack) == 2
    assert slack[1]["text"].endswith("(+1 earlier message(s) held back by the rate limit)")
    assert slack[1]["content"] == slack[1]["text"]
    assert by_path["/slack"][0]["headers"]["Authorization"] == f"Bearer {SECRET}"
    logs = result.stdout + result.stderr + (tmp_path / "state" / "logs" / "trainer.log").read_text()
    assert SECRET not in logs
    assert "ntfy-topic" not in logs


def test_a_failing_webhook_never_touches_supervision(tmp_path: Path) -> None:
    hooks = (
        '[[notify.webhooks]]\nurl = "http://127.0.0.1:9/nobody-listens"\nmin_interval_s = 0\ntimeout_s = 1\n'
    )
    result = run(tmp_path, hooks, {})
    assert result.returncode == 0, result.stdout[-2000:]
    assert result.stdout.count("webhook failed") == 1  # said once, not per message
    assert "nobody-listens" not in result.stdout


@pytest.mark.slow
def test_webhook_config_errors_are_named(tmp_path: Path) -> None:
    for hooks, problem in (
        ('[[notify.webhooks]]\nurl = "ftp://x"\n', "url must start with http:// or https://"),
        ('[[notify.webhooks]]\nurl_env = "UNSET_HOOK_URL"\n', "UNSET_HOOK_URL is not set"),
        ('[[notify.webhooks]]\nurl = "http://x"\nevents = ["crsh"]\n', "notify.webhooks[0].events[0]"),
    ):
        result = run(tmp_path, hooks, {})
        assert result.returncode == 2
        assert problem in result.stderr


def test_the_reporter_logs_records_and_sends_only_loud_events(
    tmp_path: Path, server: tuple[str, list[dict[str, Any]]], capsys: pytest.CaptureFixture[str]
) -> None:
    url, got = server
    ledger = Ledger.open(tmp_path / "state")
    hooks = [Webhook(f"{url}/json", "json", frozenset(["quarantined", "disk_space"]), 0.0, 5.0, None)]
    webhooks = Notifications(hooks)

    async def main() -> None:
        reporter = Reporter(ledger, attempt=lambda: 2, run_name="vits", webhooks=webhooks)
        reporter.report("quarantined", "warning", "moved G_30.pth to quarantine/...: rejected")
        reporter.report("plan", "info", "resume from G_20.pth")  # not loud: the ledger and the log only
        reporter.report("disk_space", "info", "plenty free")  # loud only as a warning
        await webhooks.drain()

    asyncio.run(main())
    assert [(e.attempt, e.kind) for e in ledger.events()] == [
        (2, "quarantined"),
        (2, "plan"),
        (2, "disk_space"),
    ]
    (sent,) = [json.loads(r["body"]) for r in got]
    assert (sent["event"], sent["attempt"]) == ("quarantined", 2)
    assert "G_30.pth" in sent["message"]
    assert "resume from G_20.pth" in capsys.readouterr().out
    ledger.close()


def test_a_webhook_that_cannot_even_be_queued_stays_out_of_the_callers_way(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Outside an event loop the real Notifications cannot queue its request (asyncio
    refuses the task): the report still reaches the ledger, and the caller goes on."""
    ledger = Ledger.open(tmp_path / "state")
    hooks = [Webhook("http://127.0.0.1:9/json", "json", frozenset(["gave_up"]), 0.0, 5.0, None)]
    reporter = Reporter(ledger, attempt=lambda: 3, run_name="vits", webhooks=Notifications(hooks))
    reporter.report("gave_up", "error", "giving up: first")
    reporter.report("gave_up", "error", "giving up: second")
    assert [(e.attempt, e.kind) for e in ledger.events()] == [(3, "gave_up"), (3, "gave_up")]
    assert reporter.webhook_errors.count == 2
    out = capsys.readouterr().out
    assert out.count("a webhook message could not be queued") == 1  # then only counted
    ledger.close()


@pytest.mark.slow
def test_low_disk_space_is_told_once(tmp_path: Path, server: tuple[str, list[dict[str, Any]]]) -> None:
    url, got = server
    hooks = (
        "[checkpoints]\nmin_free_gb = 1000000000\n"  # below it, always: at start and before each launch
        f'[[notify.webhooks]]\nurl = "{url}/json"\nmin_interval_s = 0\nevents = ["disk_space"]\n'
    )
    result = run(tmp_path, hooks, {})
    assert result.returncode == 0, result.stdout[-2000:]
    (told,) = [json.loads(r["body"]) for r in got]
    assert told["event"] == "disk_space"
    assert told["message"].startswith("only ")
    assert "free on the state filesystem" in told["message"]


class Redirector(BaseHTTPRequestHandler):
    """Answers every POST with a 302 to `target` (another host: another port here)."""

    target: str
    got: list[dict[str, Any]]

    def do_POST(self) -> None:
        self.got.append({"path": self.path, "headers": dict(self.headers)})
        self.send_response(302)
        self.send_header("Location", f"{self.target}/stolen")
        self.end_headers()

    def do_GET(self) -> None:
        self.got.append({"path": self.path, "headers": dict(self.headers)})
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.slow
def test_a_bearer_token_never_follows_a_redirect(
    tmp_path: Path, server: tuple[str, list[dict[str, Any]]]
) -> None:
    elsewhere, stolen = server  # "another host": whatever it receives was sent after a redirect
    got: list[dict[str, Any]] = []
    handler = type("Handler", (Redirector,), {"target": elsewhere, "got": got})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        hooks = f'[[notify.webhooks]]\nurl = "http://127.0.0.1:{httpd.server_address[1]}/hook"\ntoken_env = "HOOK_TOKEN"\nmin_interval_s = 0\n'
        result = run(tmp_path, hooks, {"HOOK_TOKEN": SECRET})
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert result.returncode == 0, result.stdout[-2000:]
    assert got
    assert all(g["headers"].get("Authorization") == f"Bearer {SECRET}" for g in got)
    assert stolen == [], "nothing, token or not, went where the redirect pointed"
    assert "redirect to http://127.0.0.1: not followed" in result.stdout
    assert SECRET not in result.stdout


@pytest.mark.slow
def test_webhook_secrets_never_reach_the_trainer_its_log_or_the_ledger(
    tmp_path: Path, server: tuple[str, list[dict[str, Any]]]
) -> None:
    """A trainer that prints its environment (and the secret, had it seen it): the token
    and URL variables are gone from its environment, and any text that holds the values
    is redacted in the log lines, the ledger and the messages sent."""
    url, got = server
    secret_url = f"{url}/hook-{SECRET}"
    dump = (
        "import os, sys\n"
        "print('env:', sorted(k for k in os.environ if k.startswith('HOOK')), flush=True)\n"
        f"print('leak: {SECRET}', flush=True)\n"
        "sys.exit(1)\n"
    )
    config = tmp_path / "run.toml"
    config.write_text(
        f"[run]\ncommand = {json.dumps([sys.executable, '-c', dump])}\nstate_dir = {json.dumps(str(tmp_path / 'state'))}\n"
        "[restart]\nbackoff_initial_s = 0\nbackoff_max_s = 0\nmax_attempts_without_progress = 1\n"
        '[[notify.webhooks]]\nurl_env = "HOOK_URL"\ntoken_env = "HOOK_TOKEN"\nmin_interval_s = 0\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "supervisor.cli", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=scaled(60),
        check=False,
        env={**os.environ, "HOOK_URL": secret_url, "HOOK_TOKEN": SECRET},
    )
    assert result.returncode == 3, result.stdout[-2000:]
    trainer_log = (tmp_path / "state" / "logs" / "trainer.log").read_text()
    assert "env: []" in trainer_log, "the variables never reached the trainer"
    ledger = Ledger.open_readonly(tmp_path / "state")
    assert ledger is not None
    texts = [e.message for e in ledger.events(200)] + [a.detail or "" for a in ledger.attempts()]
    ledger.close()
    assert any("leak: <redacted>" in t for t in texts), texts
    assert SECRET not in result.stdout
    assert SECRET not in "\n".join(texts)
    assert got
    assert all(SECRET not in g["body"] for g in got), "(only the URL's own path holds it)"


def test_a_url_in_a_config_error_shows_its_scheme_and_host_only(tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text(
        '[run]\ncommand = ["true"]\n[[notify.webhooks]]\nurl = "htps://user:pa55word@hooks.example/T0KEN/path"\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "supervisor.cli", "config", "check", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=scaled(60),
        check=False,
    )
    assert result.returncode == 2
    assert "htps://hooks.example" in result.stderr
    for secret in ("pa55word", "T0KEN", "user:"):
        assert secret not in result.stderr
