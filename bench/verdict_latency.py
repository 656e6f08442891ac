#!/usr/bin/env python3
"""Verdict latency: from the moment a checkpoint file is closed to its verdict.

A separate process writes torch checkpoints (--size-mb each) into a watched directory
and reports when each write was closed. The supervisor's own pieces do the rest, as in
the daemon: CheckpointWatcher (inotify, quiet period --quiet-s) reports the file as
landed, and a warm ValidatorClient judges it. For each file the latency splits into:

  quiet wait    close -> "landed" (by design between 1x and 2x quiet_s after the last write)
  validation    the validator's own time on the file
  overhead      everything else (event delivery, queueing, the client round trip)

The claim to check: latency = quiet period + validation time, and nothing else of note.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from supervisor.checkpoints.watch import CheckpointWatcher, Landed
from supervisor.outputs import logs
from supervisor.validator.client import ValidationRequest, ValidatorClient

WRITER = """
import json, sys, time, torch
directory, count, size_mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(count):
    tensor = torch.randn(size_mb * 1024 * 1024 // 4)
    path = f"{directory}/ckpt_{i}.pt"
    with open(path, "wb") as fh:
        torch.save({"model": {"w": tensor}, "step": i}, fh)
    print(json.dumps({"path": path, "closed": time.time()}), flush=True)
    time.sleep(float(sys.argv[4]))
"""


async def measure(
    directory: Path, count: int, size_mb: int, quiet_s: float, gap_s: float
) -> list[dict[str, float]]:
    loop = asyncio.get_running_loop()
    landed: asyncio.Queue[tuple[Landed, float]] = asyncio.Queue()
    watcher = CheckpointWatcher(
        [directory],
        lambda item: landed.put_nowait((item, time.time())),
        accept=lambda p: p.suffix == ".pt",
        quiet_s=quiet_s,
    )
    client = ValidatorClient(idle_timeout_s=None)
    await client.start()
    await client.validate(ValidationRequest(path="/nonexistent"))  # wait for its torch import
    await watcher.start()
    writer = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        WRITER,
        str(directory),
        str(count),
        str(size_mb),
        str(gap_s),
        stdout=asyncio.subprocess.PIPE,
    )
    closed: dict[str, float] = {}
    results = []
    try:
        assert writer.stdout is not None
        for _ in range(count):
            line = await writer.stdout.readline()
            record = json.loads(line)
            closed[record["path"]] = record["closed"]
            item, landed_at = await asyncio.wait_for(landed.get(), 120)
            verdict = await client.validate(ValidationRequest(path=str(item.path), step_key="step"))
            done = time.time()
            assert verdict.ok, verdict.reason
            close = closed[str(item.path)]
            results.append(
                {
                    "total": done - close,
                    "quiet": landed_at - close,
                    "validation": verdict.seconds,
                    "overhead": (done - close) - (landed_at - close) - verdict.seconds,
                }
            )
        await writer.wait()
    finally:
        await watcher.stop()
        await client.close()
        del loop
    return results


def main() -> None:
    logs.configure(level=logging.WARNING, stream=sys.stderr)  # keep the report clean
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=6)
    parser.add_argument("--size-mb", type=int, default=128)
    parser.add_argument("--quiet-s", type=float, default=0.5)
    parser.add_argument("--gap-s", type=float, default=1.0, help="pause between two saves")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="verdict-latency-"))
    try:
        results = asyncio.run(measure(directory, args.files, args.size_mb, args.quiet_s, args.gap_s))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print(f"verdict latency: {args.files} checkpoints of {args.size_mb} MB, quiet_s = {args.quiet_s}")
    print(f"  {'':14}{'median':>9}{'max':>9}  ms")
    for key in ("total", "quiet", "validation", "overhead"):
        values = [r[key] * 1000 for r in results]
        print(f"  {key:14}{statistics.median(values):9.1f}{max(values):9.1f}")
    total = statistics.median(r["total"] for r in results)
    parts = statistics.median(r["quiet"] + r["validation"] for r in results)
    print(f"  total / (quiet wait + validation) = {total / parts:.3f}   (the claim: about 1)")
    print(
        f"  quiet wait / quiet_s = {statistics.median(r['quiet'] for r in results) / args.quiet_s:.2f}   (by design 1-2)"
    )


if __name__ == "__main__":
    main()
