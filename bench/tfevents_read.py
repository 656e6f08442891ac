#!/usr/bin/env python3
"""Read throughput of supervisor.signals.tensorboard on event files tensorboardX writes in this run.

Two files of about --size-mb each:

  scalars      only scalars (eight Applio loss tags per step): small records, decoding dominates
  applio-like  per epoch: fifteen scalars and three ~150 KB image records (Applio logs mel
               spectrograms every epoch); the CRC of the large records dominates

For each: a fresh EventDirReader's first poll() (the whole file, best of --repeat) against
plain reading of the same bytes (Path.read_bytes, page cache warm), and crc32c alone.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tensorboardX import FileWriter
from tensorboardX.proto.summary_pb2 import Summary

from supervisor.signals.tensorboard import PATTERN, EventDirReader, crc32c

TAGS = [f"loss_avg_50/{name}" for name in ("g/total", "g/mel", "g/kl", "g/fm", "g/adv", "d/adv")]
TAGS += ["grad_avg_50/norm_g", "grad_avg_50/norm_d"]
EPOCH_TAGS = [f"loss/{n}" for n in ("g/total", "d/adv", "g/adv", "g/fm", "g/mel", "g/kl")] + ["learning_rate"]
IMAGE_BYTES = 150 * 1024
RECORD_OVERHEAD = 16 + 16  # framing, then the Event's wall_time, step and summary keys


def scalar(tag: str, value: float) -> Summary.Value:
    return Summary.Value(tag=tag, simple_value=value)


def image(tag: str) -> Summary.Value:
    encoded = os.urandom(IMAGE_BYTES)
    return Summary.Value(
        tag=tag, image=Summary.Image(height=80, width=400, colorspace=1, encoded_image_string=encoded)
    )


def scalars_batch(step: int) -> list[Summary.Value]:
    return [scalar(tag, 1.0 / (step + 1)) for tag in TAGS]


def applio_epoch(step: int) -> list[Summary.Value]:
    values = scalars_batch(step) + [scalar(tag, 2.0) for tag in EPOCH_TAGS]
    return values + [image(tag) for tag in ("slice/mel_org", "slice/mel_gen", "all/mel")]


def write(directory: Path, size_mb: float, batch: Callable[[int], list[Summary.Value]]) -> Path:
    """Counts the bytes itself: tensorboardX writes from a thread, so the file size lags."""
    writer = FileWriter(str(directory), max_queue=1000)
    step = written = 0
    while written < size_mb * 1024 * 1024:
        for value in batch(step):
            summary = Summary(value=[value])
            writer.add_summary(summary, step)
            written += summary.ByteSize() + RECORD_OVERHEAD
        step += 1
    writer.close()
    (path,) = directory.glob(PATTERN)
    return path


def best(repeat: int, work: Callable[[], object]) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - start)
    return min(times), result


def measure(name: str, path: Path, repeat: int) -> None:
    size_mb = path.stat().st_size / 1024 / 1024
    plain_s, data = best(repeat, path.read_bytes)
    reader_s, scalars = best(repeat, lambda: EventDirReader(path.parent).poll())
    assert isinstance(data, bytes)
    assert isinstance(scalars, list)
    crc_s, _ = best(repeat, lambda: crc32c(data))
    print(
        f"{name:12} {size_mb:6.2f} MB  {len(scalars):7d} scalars  "
        f"reader {size_mb / reader_s:6.1f} MB/s ({reader_s * 1000:6.0f} ms, {len(scalars) / reader_s:8.0f} scalars/s)  "
        f"crc32c alone {size_mb / crc_s:5.1f} MB/s  "
        f"plain read {size_mb / plain_s:7.0f} MB/s  reader/plain time {reader_s / plain_s:6.0f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mb", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name, batch in (("scalars", scalars_batch), ("applio-like", applio_epoch)):
            directory = Path(tmp) / name
            start = time.perf_counter()
            path = write(directory, args.size_mb, batch)
            print(
                f"{name}: tensorboardX wrote {path.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - start:.1f} s"
            )
            measure(name, path, args.repeat)


if __name__ == "__main__":
    main()
