#!/usr/bin/env python3
"""Checkpoint validation on a ~1 GB checkpoint, against just reading the file.

Writes a torch checkpoint of --size-mb MB (fp32 weights, an fp16 EMA copy and fp32
optimizer state, in 32 MB and 16 MB tensors, plus small biases; random values) and a
tiny one into a temporary directory, warms the page cache, then, in this one run:

  cat          `cat FILE > /dev/null`, median of --runs;
  validation   the one-shot worker (`python -m supervisor.validator.worker.serve FILE`, the
               whole process) on the big file minus the same on the tiny file, medians
               of 2 * --runs + 1 alternating runs: interpreter start-up and `import torch`
               cancel out, what is left is what validating the data costs (start-up
               varies by +-50 ms, so the same difference as timed inside the worker is
               shown too);
  peak RSS     of that worker process (VmHWM, polled while it runs) and its CPU time;
  latency      ValidatorClient.validate() on the big file with a warm worker: request in
               to verdict out, median of --runs (and the worker's own time);
  naive load   torch.load(FILE, weights_only=True) in this process (reads everything
               into memory), median of 3, for comparison;
  breakdown    the worker's phases in this process: torch.load(mmap=True) and the walk
               over the loaded object, then the data pass with parts switched off (read
               only, read + CRC, read + finiteness sum, all of it).

Prints ratio = validation / cat next to the target (<= 1.5). Everything is deleted at the
end unless --keep.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from _claims import claim, exit_status

from supervisor.outputs import logs
from supervisor.validator.client import ValidationRequest, ValidatorClient, Verdict
from supervisor.validator.worker import crc as w_crc
from supervisor.validator.worker import data_pass as w_data_pass
from supervisor.validator.worker import job as w_job
from supervisor.validator.worker import torch_load as w_torch_load
from supervisor.validator.worker import torch_zip as w_torch_zip
from supervisor.validator.worker import walk as w_walk

TARGET_RATIO = 1.5
MiB = 1 << 20


def write_checkpoint(path: Path, size_mb: int) -> None:
    """fp32 weights (1/2 of the size), an fp16 EMA of them (1/4), fp32 Adam exp_avg (1/4)."""
    generator = torch.Generator().manual_seed(0)
    rows = 2048
    layers = max(1, size_mb // 2 // 32)  # 32 MB fp32 matrices
    model: dict[str, torch.Tensor] = {}
    for i in range(layers):
        model[f"layers.{i}.weight"] = torch.randn(rows, 4096, generator=generator)
        model[f"layers.{i}.bias"] = torch.randn(4096, generator=generator)
    ema = {name: t.half() for name, t in model.items()}
    state = {
        i: {"exp_avg": torch.randn(rows, 2048, generator=generator), "step": torch.tensor(5000.0)}
        for i in range(layers)
    }
    checkpoint = {
        "model": model,
        "ema": ema,
        "optimizer": {"state": state, "param_groups": [{"lr": 2e-4, "betas": (0.8, 0.99)}]},
        "step": 5000,
        "epoch": 12,
    }
    torch.save(checkpoint, path)


def timed(function: Callable[[], object]) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def cat(path: Path) -> None:
    with open(os.devnull, "wb") as sink:
        subprocess.run(["cat", str(path)], stdout=sink, check=True)


def peak_rss(pid: int) -> int | None:
    """VmHWM of a live process, in bytes. (wait4's ru_maxrss will not do: it starts from
    the RSS of the forking parent, this whole benchmark.)"""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


@dataclass(frozen=True)
class Run:
    wall_s: float
    cpu_s: float
    peak_rss: int
    verdict: Verdict


def one_shot(path: Path, *, poll_rss: bool = False) -> Run:
    """One validator process, start to exit. With poll_rss, its peak RSS is read while it
    runs (the high-water mark only grows; the verdict is printed after the work is done),
    in runs of their own: the polling costs CPU the timed runs should not share."""
    command = [sys.executable, "-m", "supervisor.validator.worker.serve", str(path), "--step-key", "step"]
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE)
    assert child.stdout is not None
    if poll_rss:
        os.set_blocking(child.stdout.fileno(), False)
    output, peak = b"", 0
    while (chunk := child.stdout.read()) != b"":  # None: nothing yet; b"": EOF
        output += chunk or b""
        if poll_rss:
            peak = max(peak, peak_rss(child.pid) or 0)
            time.sleep(0.002)
    _, status, usage = os.wait4(child.pid, 0)
    wall_s = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    return Run(wall_s, usage.ru_utime + usage.ru_stime, peak, Verdict.from_json(json.loads(output)))


async def client_latency(path: Path, runs: int) -> tuple[list[float], list[float]]:
    latencies, worker_seconds = [], []
    async with ValidatorClient() as client:
        await client.validate(ValidationRequest(str(path)))  # starts and warms the worker
        for _ in range(runs):
            started = time.perf_counter()
            verdict = await client.validate(ValidationRequest(str(path), step_key="step"))
            latencies.append(time.perf_counter() - started)
            worker_seconds.append(verdict.seconds)
            assert verdict.ok, verdict
    return latencies, worker_seconds


def breakdown(path: Path, runs: int) -> dict[str, tuple[float, float]]:
    """Median wall and CPU seconds of the worker's phases, run in this process."""
    torch.set_num_threads(1)
    job = w_job.Job(ValidationRequest(str(path)))
    job.fd = os.open(path, os.O_RDONLY)
    job.stat = os.fstat(job.fd)
    job.format = w_job.FORMAT_ZIP
    records = w_torch_zip.zip_records(job)
    data = [r for r in records if "/data/" in r.name]
    root = w_torch_load.torch_load(job, mmap=True)
    owners = w_walk.collect_owners(root)
    regions = w_torch_zip._regions_for_records(job, data, owners)
    plain = [w_data_pass.Region(r.file_offset, r.length) for r in regions if r.read]
    real_crc = w_data_pass.crc32  # type: ignore[attr-defined]  # the name the data pass calls

    def no_crc(data: object, value: int) -> int:
        return 0

    def load() -> None:
        w_walk.collect_owners(w_torch_load.torch_load(job, mmap=True))

    def pass_with(crc: Callable[[object, int], int], regions: list[w_data_pass.Region]) -> Callable[[], None]:
        def run() -> None:
            w_data_pass.crc32 = crc  # type: ignore[attr-defined]
            try:
                w_data_pass.data_pass(job.fd, regions)
            finally:
                w_data_pass.crc32 = real_crc  # type: ignore[attr-defined]

        return run

    phases = {
        "torch.load(mmap) + walk": load,
        "read only": pass_with(no_crc, plain),
        "read + CRC-32": pass_with(real_crc, plain),
        "read + finiteness": pass_with(no_crc, regions),
        "read + CRC-32 + finiteness": pass_with(real_crc, regions),
    }
    result = {name: (median_timed(f, runs)) for name, f in phases.items()}
    os.close(job.fd)
    return result


def median_timed(function: Callable[[], object], runs: int) -> tuple[float, float]:
    """Median wall and CPU seconds (this process, all threads) of `function`."""
    walls, cpus = [], []
    for _ in range(runs):
        cpu = time.process_time()
        walls.append(timed(function))
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f}"


def main() -> int:
    logs.configure(level=logging.WARNING, stream=sys.stderr)  # keep the report clean
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--dir", type=Path, help="where to write the checkpoints (default: a temp dir)")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="validate-big-", dir=args.dir))
    try:
        big, tiny = directory / "big.pt", directory / "tiny.pt"
        write_checkpoint(big, args.size_mb)
        torch.save({"model": {"w": torch.ones(4)}, "step": 5000}, tiny)
        size = big.stat().st_size
        for _ in range(2):
            cat(big)  # warm the page cache
        report(big, tiny, size, args.runs)
    finally:
        if args.keep:
            print(f"kept {directory}")
        else:
            shutil.rmtree(directory)
    return exit_status()


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(runs: list[Run]) -> str:
    quartiles = statistics.quantiles([r.wall_s * 1000 for r in runs], n=4)
    return f"p25-p75 {quartiles[0]:.0f}-{quartiles[2]:.0f} ms"


def report(big: Path, tiny: Path, size: int, runs: int) -> None:
    cat_s = median([timed(lambda: cat(big)) for _ in range(runs)])
    big_runs: list[Run] = []
    tiny_runs: list[Run] = []
    for _ in range(2 * runs + 1):  # alternating, so a slow patch of the machine hits both
        big_runs.append(one_shot(big))
        tiny_runs.append(one_shot(tiny))
    assert all(r.verdict.ok for r in big_runs + tiny_runs)
    big_rss, tiny_rss = one_shot(big, poll_rss=True).peak_rss, one_shot(tiny, poll_rss=True).peak_rss
    in_worker_s = median([r.verdict.seconds for r in big_runs]) - median(
        [r.verdict.seconds for r in tiny_runs]
    )
    validation_s = median([r.wall_s for r in big_runs]) - median([r.wall_s for r in tiny_runs])
    validation_cpu = median([r.cpu_s for r in big_runs]) - median([r.cpu_s for r in tiny_runs])
    latencies, worker_seconds = asyncio.run(client_latency(big, runs))
    naive_s = median([timed(lambda: torch.load(big, weights_only=True)) for _ in range(3)])
    phases = breakdown(big, runs)
    latency_s = median(latencies)
    gb = size / 1e9
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())

    print(
        f"validate_big: {size / MiB:.0f} MiB torch checkpoint, page cache warm, medians of {runs} "
        f"({2 * runs + 1} for the validator processes)"
    )
    print(
        f"  {os.cpu_count()} CPUs, Linux {platform.release()}, torch {torch.__version__}, "
        f"CRC-32 from {getattr(w_crc.crc32, '__module__', '?')}, {w_data_pass._threads()} scan threads, "
        f"load average {load}"
    )
    print(f"  {'':<40}{'ms':>8}   GB/s")
    print(f"  {'cat FILE > /dev/null':<40}{ms(cat_s)}   {gb / cat_s:5.1f}")
    print(
        f"  {'validator process, big file':<40}{ms(median([r.wall_s for r in big_runs]))}   {spread(big_runs)}"
    )
    print(
        f"  {'validator process, tiny file':<40}{ms(median([r.wall_s for r in tiny_runs]))}   {spread(tiny_runs)}"
    )
    print(
        f"  {'validation (big - tiny)':<40}{ms(validation_s)}   {gb / validation_s:5.1f}"
        f"   CPU {validation_cpu * 1000:.0f} ms = {validation_cpu / validation_s:.1f} cores busy"
    )
    print(f"  {'  the same, timed inside the worker':<40}{ms(in_worker_s)}   {gb / in_worker_s:5.1f}")
    print(f"  {'naive torch.load(weights_only=True)':<40}{ms(naive_s)}   {gb / naive_s:5.1f}")
    print(
        f"  {'ValidatorClient request -> verdict':<40}{ms(latency_s)}   {gb / latency_s:5.1f}"
        f"   (warm worker; its own time {median(worker_seconds) * 1000:.1f} ms)"
    )
    print(
        f"  peak RSS of the validator: {big_rss / MiB:.0f} MiB on the big file, "
        f"{tiny_rss / MiB:.0f} MiB on the tiny one; the file is {size / MiB:.0f} MiB"
    )
    print("  where the time goes (worker's phases in this process, same file):")
    for name, (wall_s, cpu_s) in phases.items():
        print(f"    {name:<38}{ms(wall_s)}   CPU {cpu_s * 1000:6.1f} ms")
    print(f"  ratio validation / cat (target <= {TARGET_RATIO}):")
    for label, seconds in (
        ("validator processes, big - tiny", validation_s),
        ("timed inside the worker, big - tiny", in_worker_s),
        ("ValidatorClient, request -> verdict", latency_s),
    ):
        ratio = seconds / cat_s
        verdict = "met" if ratio <= TARGET_RATIO else f"NOT met, {ratio / TARGET_RATIO - 1:.0%} over"
        print(f"    {label:<38}{ratio:8.2f}   {verdict}")
    claim("validation / cat, whole validator processes (big - tiny)", validation_s / cat_s, TARGET_RATIO)
    print(
        "    (the first is the difference of two ~1 s process runs: it swings with their start-up, see p25-p75)"
    )


if __name__ == "__main__":
    sys.exit(main())
