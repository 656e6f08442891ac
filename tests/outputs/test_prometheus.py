"""Prometheus metrics: the text format from a snapshot, the HTTP endpoint over real
sockets, loopback-only config, and a real scrape of the real supervisor while its
trainer crashes once and saves checkpoints."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from supervisor.config import ConfigError, load, to_toml
from supervisor.outputs.prometheus import CONTENT_TYPE, VALIDATION_BUCKETS_S, MetricsServer, exposition
from supervisor.outputs.status_socket import Snapshot
from tests.support.load import scaled
from tests.support.procs import behave, wait_for

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).parents[2]
CLI = [sys.executable, "-m", "supervisor.cli"]
TRAINER = [sys.executable, "-m", "supervisor_demo.trainer"]
SAMPLE = re.compile(r"^([a-z_]+)(\{[^}]*\})? (\S+)$")


def snapshot(**changes: Any) -> Snapshot:
    values: dict[str, Any] = {
        "run": "ljs",
        "phase": "running",
        "attempt": 3,
        "supervisor_pid": 1,
        "started_at": 1_700_000_000.5,
        "uptime_s": 60.0,
        "trainer_pid": 2,
        "last_progress_age_s": 1.5,
        "last_progress_sign": "heartbeat at 9",
        "best_step": 2000,
        "next_relaunch_in_s": None,
        "next_backoff_s": 20.0,
        "attempts_without_progress": 1,
        "last_cause": "crash",
        "restarts_by_cause": {"crash": 1, "hang": 1, "stopped": 4, "completed": 1},
    }
    return Snapshot(**{**values, **changes})


def samples(text: str) -> dict[str, float]:
    """'name{labels}' -> value, for every sample line; every line must parse."""
    found = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        found[f"{match[1]}{match[2] or ''}"] = float(match[3])
    return found


def test_the_text_format_has_help_type_and_the_run_on_every_sample() -> None:
    text = exposition(snapshot(), [0.02, 0.3, 0.3, 7.0, 9000.0])
    assert text.endswith("\n")
    values = samples(text)
    assert all('run="ljs"' in name for name in values)
    families = {line.split()[2]: line.split()[3] for line in text.splitlines() if line.startswith("# TYPE")}
    assert families == {
        "train_supervisor_restarts_total": "counter",
        "train_supervisor_attempt": "gauge",
        "train_supervisor_attempts_without_progress": "gauge",
        "train_supervisor_state": "gauge",
        "train_supervisor_start_time_seconds": "gauge",
        "train_supervisor_last_verified_step": "gauge",
        "train_supervisor_heartbeat_age_seconds": "gauge",
        "train_supervisor_checkpoint_validation_seconds": "histogram",
    }
    assert sum(line.startswith("# HELP train_supervisor_") for line in text.splitlines()) == len(families)
    assert values['train_supervisor_restarts_total{run="ljs",cause="crash"}'] == 1
    assert values['train_supervisor_restarts_total{run="ljs",cause="oom-cuda"}'] == 0
    assert not any('cause="stopped"' in n or 'cause="completed"' in n for n in values), "not restarts"
    assert values['train_supervisor_last_verified_step{run="ljs"}'] == 2000
    assert values['train_supervisor_heartbeat_age_seconds{run="ljs"}'] == 1.5
    assert values['train_supervisor_state{run="ljs",state="running"}'] == 1
    assert values['train_supervisor_state{run="ljs",state="backoff"}'] == 0
    assert values['train_supervisor_start_time_seconds{run="ljs"}'] == 1_700_000_000.5


def test_validation_times_make_a_cumulative_histogram() -> None:
    values = samples(exposition(snapshot(), [0.02, 0.3, 0.3, 7.0, 9000.0]))

    def bucket(le: str) -> float:
        return values[f'train_supervisor_checkpoint_validation_seconds_bucket{{run="ljs",le="{le}"}}']

    assert (bucket("0.05"), bucket("0.25"), bucket("0.5"), bucket("10.0"), bucket("600.0")) == (1, 1, 3, 4, 4)
    assert bucket("+Inf") == 5
    assert values['train_supervisor_checkpoint_validation_seconds_count{run="ljs"}'] == 5
    assert values['train_supervisor_checkpoint_validation_seconds_sum{run="ljs"}'] == pytest.approx(9007.62)
    bounds = [bucket(repr(b)) for b in VALIDATION_BUCKETS_S]
    assert bounds == sorted(bounds)


def test_unknown_values_are_left_out_and_labels_are_escaped() -> None:
    idle = exposition(snapshot(run='a"b\\c', best_step=None, phase="backoff"), [])
    names = samples(idle)
    assert not any(n.startswith("train_supervisor_last_verified_step") for n in names)
    assert not any(n.startswith("train_supervisor_heartbeat_age_seconds") for n in names), (
        "only while running"
    )
    assert 'train_supervisor_attempt{run="a\\"b\\\\c"}' in names
    assert names['train_supervisor_checkpoint_validation_seconds_count{run="a\\"b\\\\c"}'] == 0


# --- config -------------------------------------------------------------------------


def write_config(tmp_path: Path, metrics: str) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(f'[run]\ncommand = ["true"]\nstate_dir = "{tmp_path / "state"}"\n{metrics}')
    return path


def test_metrics_are_off_by_default_and_only_on_loopback(tmp_path: Path) -> None:
    assert load(write_config(tmp_path, "")).metrics.port == 0
    assert 'bind = "127.0.0.1"' in to_toml(load(write_config(tmp_path, "")))
    assert load(write_config(tmp_path, '[metrics]\nport = 9400\nbind = "::1"\n')).metrics.bind == "::1"
    for table, problem in (
        ('[metrics]\nport = 9400\nbind = "0.0.0.0"\n', "metrics.bind: only a loopback address"),
        ('[metrics]\nport = 9400\nbind = "localhost"\n', "metrics.bind: expected an IP address"),
        ("[metrics]\nport = 70000\n", "metrics.port: Input should be less than or equal to 65535"),
        ("[metrics]\nprot = 9400\n", "metrics.prot: unknown key (did you mean port?)"),
    ):
        with pytest.raises(ConfigError) as error:
            load(write_config(tmp_path, table))
        assert problem in str(error.value)


def test_the_example_config_documents_the_metrics_table() -> None:
    text = (ROOT / "config.example.toml").read_text()
    table = text[text.index("\n[metrics]") :]
    assert re.search(r"^#? ?port = 0", table, re.M)
    assert re.search(r'^#? ?bind = "127.0.0.1"', table, re.M)


# --- the HTTP endpoint ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def serving(body: Callable[[int], Awaitable[None]], render: Callable[[], str] = lambda: "m 1\n") -> None:
    async def main() -> None:
        port = free_port()
        server = MetricsServer("127.0.0.1", port, render)
        await server.start()
        try:
            await asyncio.wait_for(body(port), scaled(30))
        finally:
            await server.stop()

    asyncio.run(main())


def exchange(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(10)) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_get_head_and_what_else_a_client_may_ask() -> None:
    answers: list[bytes] = []

    async def body(port: int) -> None:
        for request in (
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /metrics?x=1 HTTP/1.0\r\n\r\n",
            b"HEAD /metrics HTTP/1.1\r\n\r\n",
            b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"nonsense\r\n\r\n",
        ):
            answers.append(await asyncio.to_thread(exchange, port, request))

    serving(body)
    get, query, head, post, root, nonsense = answers
    assert get.startswith(b"HTTP/1.1 200 OK\r\n")
    assert f"Content-Type: {CONTENT_TYPE}\r\n".encode() in get
    assert get.endswith(b"\r\n\r\nm 1\n")
    assert b"Content-Length: 4\r\n" in get
    assert query.endswith(b"\r\n\r\nm 1\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert head.endswith(b"\r\n\r\n")
    assert post.startswith(b"HTTP/1.1 405 ")
    assert b"Allow: GET, HEAD\r\n" in post
    assert root.startswith(b"HTTP/1.1 404 ")
    assert nonsense.startswith(b"HTTP/1.1 404 ")


def test_a_silent_or_endless_client_does_not_hold_up_a_scrape() -> None:
    answers: list[bytes] = []

    async def body(port: int) -> None:
        silent = socket.create_connection(("127.0.0.1", port))
        endless = socket.create_connection(("127.0.0.1", port))
        endless.sendall(b"GET /metrics HTTP/1.1\r\nX: " + b"y" * 20000)  # a head over the limit
        try:
            answers.append(await asyncio.to_thread(exchange, port, b"GET /metrics HTTP/1.1\r\n\r\n"))
            answers.append(await asyncio.to_thread(recv_all, endless))
        finally:
            silent.close()
            endless.close()

    serving(body)
    assert answers[0].endswith(b"\r\n\r\nm 1\n")
    assert answers[1] == b"", "an over-long request head gets no answer"


def recv_all(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    chunks = []
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_a_render_error_is_logged_once_and_a_port_in_use_is_only_a_warning(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def broken() -> str:
        raise RuntimeError("render broke")

    answers: list[bytes] = []

    async def body(port: int) -> None:
        for _ in range(2):
            answers.append(await asyncio.to_thread(recv_all_of, port))
        second = MetricsServer("127.0.0.1", port, broken)
        await second.start()  # the port is taken: said, not raised
        await second.stop()

    serving(body, broken)
    assert answers == [b"", b""]
    out = capsys.readouterr().out
    assert out.count("error while serving metrics") == 1
    assert "metrics cannot be served" in out


def recv_all_of(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(10)) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
        return recv_all(sock)


# --- the real supervisor --------------------------------------------------------------


def scrape(port: int) -> dict[str, float] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=scaled(5)) as response:
            assert response.headers["Content-Type"] == CONTENT_TYPE
            return samples(response.read().decode())
    except (urllib.error.URLError, ConnectionError):
        return None


def twin_config(tmp_path: Path, port: int) -> Path:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "faults.json").write_text(json.dumps([{"at_step": 15, "kind": "exception"}]))
    command = [*TRAINER, "--run-dir", str(run), "--steps", "100000", "--save-every", "10"]
    command += ["--step-time", "0.02"]
    lines = [
        "[run]",
        f"command = {json.dumps(command)}",
        f"state_dir = {json.dumps(str(tmp_path / 'state'))}",
        "[adapter]",
        'name = "generic"',
        'checkpoint_dir = "run/checkpoints"',
        'pattern = "ckpt_{step}.pt"',
        'required_keys = ["model", "optimizer", "step"]',
        'step_key = "step"',
        "[heartbeat]",
        'mode = "on"',  # checkpoints landing are signs of progress
        "[restart]",
        "backoff_initial_s = 0.1",
        "backoff_max_s = 0.2",
        "[checkpoints]",
        "quiet_s = 0.2",
        "[metrics]",
        f"port = {port}",
    ]
    path = tmp_path / "twin.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.slow
def test_a_real_scrape_of_a_run_that_crashed_once_and_verified_checkpoints(tmp_path: Path) -> None:
    port = free_port()
    config = twin_config(tmp_path, port)
    out = tmp_path / "supervisor.log"
    labels = '{run="twin"}'
    with out.open("wb") as log:
        sup = subprocess.Popen([*CLI, "run", "-c", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        values = wait_for(
            lambda: (
                (m := scrape(port)) and m.get(f"train_supervisor_last_verified_step{labels}", 0) >= 20 and m
            ),
            timeout=scaled(90),
            what="a checkpoint verified after the crash",
        )
        status = json.loads(
            subprocess.run(
                [*CLI, "status", "-c", str(config), "--json"], capture_output=True, text=True, check=True
            ).stdout
        )
    finally:
        sup.terminate()
        try:
            code = sup.wait(timeout=scaled(240))  # not what the test is about: a generous budget
        except subprocess.TimeoutExpired:
            sup.kill()
            sup.wait()
            raise AssertionError(f"no exit after SIGTERM; its output:\n{out.read_text()[-8000:]}") from None
    assert code == 0, out.read_text()[-3000:]
    assert values['train_supervisor_restarts_total{run="twin",cause="crash"}'] == 1
    assert values[f"train_supervisor_attempt{labels}"] == 2
    assert values['train_supervisor_state{run="twin",state="running"}'] == 1
    assert values[f"train_supervisor_heartbeat_age_seconds{labels}"] >= 0
    assert values[f"train_supervisor_checkpoint_validation_seconds_count{labels}"] >= 2
    assert values[f"train_supervisor_checkpoint_validation_seconds_sum{labels}"] > 0
    assert values[f"train_supervisor_start_time_seconds{labels}"] > 0
    assert status["source"] == "live"
    assert status["last_verified_step"] >= 20
    assert status["last_verified_at"] is not None
    assert status["restarts_by_cause"] == {"crash": 1}
    assert scrape(port) is None, "the endpoint goes with the supervisor"
    assert not (tmp_path / "state" / "status.sock").exists()
    assert f"http://127.0.0.1:{port}/metrics" in out.read_text()


@pytest.mark.slow
def test_metrics_on_a_taken_port_never_stop_supervision(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "run.toml"
        config.write_text(
            f"[run]\ncommand = {json.dumps(behave('exit', '0'))}\n"
            f"state_dir = {json.dumps(str(tmp_path / 'state'))}\n[metrics]\nport = {port}\n"
        )
        result = subprocess.run(
            [*CLI, "run", "-c", str(config)], capture_output=True, text=True, timeout=scaled(60), check=False
        )
    assert result.returncode == 0, result.stdout[-2000:]
    assert "metrics cannot be served" in result.stdout
    assert os.path.exists(tmp_path / "state" / "ledger.sqlite3")
