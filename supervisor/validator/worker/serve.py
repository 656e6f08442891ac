"""The checkpoint validator worker: judges one checkpoint file at a time, in its own
process, because it imports torch and because a broken or hostile file may only ever
take down this process (the daemon imports `supervisor.validator.client`, never this).

    python -m supervisor.validator.worker.serve --serve [--memory-limit-mb N] [--parent-pid P]
        JSON lines until EOF: {"id": n, "request": {...}} in on stdin,
        {"id": n, "verdict": {...}} out on stdout. This is what ValidatorClient runs.
    python -m supervisor.validator.worker.serve PATH [--step-key K] [--required-key K ...]
        one file; its verdict as JSON on stdout; exit status 0 if ok, 1 if rejected.

Checks, cheapest first; the first failure is the verdict:
  1. the file exists, is a regular file and is not empty;
  2. the format by its magic bytes: torch zip, legacy (pre-1.6) torch.save, safetensors;
  3. structure. Torch zip: central directory, every local header, records stored
     uncompressed and inside the file, the small records' (data.pkl ...) CRC-32.
     Safetensors: header length, JSON, every tensor's dtype x shape equal to its byte
     range, the ranges tiling the data area exactly (what the safetensors library
     demands too, and it is asked as well);
  4. torch.load(weights_only=True, mmap=True for zips, map_location="cpu") inside
     safe_globals(allowed_globals). Never an unrestricted unpickle, no fallback: a global
     that is not allowed is a rejection naming it;
  5. content: required keys, step and epoch (int or 0-dim tensor) equal to the name's;
  6. data, in one pass over every tensor byte: each record's CRC-32 against the central
     directory and every floating-point value finite. Each 1 MiB slice is read into a
     per-thread buffer and CRC'd and summed while it sits in L2 (every byte is read
     once); units go to a thread pool (the CRC and torch's sum release the GIL) and
     unit CRCs are combined with crc32_combine, so one huge tensor still uses every core.
     torch's own mapping of the file only tells each record's dtype and tensor names;
  7. the path still names the file that was opened, unchanged (inode, size, mtime).

Decisions:
  - Finiteness: the plain sum of a slice (fp32 accumulation inside torch's kernels) is
    finite if every element is (IEEE: NaN and Inf propagate, Inf - Inf is NaN); only a
    non-finite sum is checked element by element, which also names the tensor and tells
    NaN from Inf, and tells an overflowing sum (or values outside any tensor) from damage.
  - CRCs disabled by the writer (torch.serialization.set_crc32_options(False) stores 0
    for every record): record data cannot be verified, the verdict stays ok with a note.
    Rejecting would reject every checkpoint of such a trainer forever.
  - Legacy files have no checksums and cannot be mmapped: they are loaded into memory
    (and so count in full against the memory limit); the checksum is the whole file's.
  - Memory limit: RLIMIT_AS counts every mapping (torch alone reserves ~600 MB, and an
    mmapped checkpoint counts in full), so no fixed value both allows big files and
    means anything. RLIMIT_DATA counts private writable memory: heap, anonymous maps,
    thread stacks, and also the MAP_PRIVATE mapping torch.load(mmap=True) makes of the
    file. So each job sets the soft RLIMIT_DATA to the limit plus the size of the file
    it maps: the file's pages are page cache, not worker memory; all else counts.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import sys
from typing import Any

import torch

from supervisor.validator.protocol import ValidationRequest
from supervisor.validator.worker.checks import validate
from supervisor.validator.worker.content import (
    Rejected,
    lookup,
)
from supervisor.validator.worker.memory import MemoryLimit, _libc

__all__ = ["Rejected", "lookup", "main", "validate"]


# --- process ------------------------------------------------------------------------


def _die_with_parent(parent_pid: int | None) -> None:
    """No orphans: the kernel kills us when the client goes, even by SIGKILL."""
    PR_SET_PDEATHSIG = 1
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if parent_pid is not None and os.getppid() != parent_pid:
        sys.exit(0)  # it went before we could ask


def serve(memory: MemoryLimit) -> int:
    """Answer JSON-line requests on stdin until EOF."""
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # whatever a library prints goes to stderr, never into the protocol
    for raw in sys.stdin.buffer:
        job_id: object = None
        try:
            message = json.loads(raw)
            job_id = message["id"]
            request = ValidationRequest.from_json(message["request"])
        except (ValueError, KeyError, TypeError) as exc:
            reply: dict[str, Any] = {"id": job_id, "error": f"bad request: {exc}"}
        else:
            reply = {"id": job_id, "verdict": validate(request, memory).to_json()}
        try:
            protocol.write(json.dumps(reply) + "\n")
            protocol.flush()
        except BrokenPipeError:
            return 0
    return 0


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m supervisor.validator.worker.serve", description=__doc__.split("\n")[0]
    )
    parser.add_argument("path", nargs="?", help="validate this one file and print its verdict as JSON")
    parser.add_argument("--serve", action="store_true", help="answer JSON-line requests on stdin")
    parser.add_argument("--parent-pid", type=int)
    parser.add_argument("--memory-limit-mb", type=int)
    parser.add_argument("--required-key", action="append", default=[])
    parser.add_argument("--step-key")
    parser.add_argument("--epoch-key")
    parser.add_argument("--expected-step", type=int)
    parser.add_argument("--expected-epoch", type=int)
    parser.add_argument("--allow-global", action="append", default=[])
    parser.add_argument("--no-finite", action="store_true", help="skip the finiteness check")
    args = parser.parse_args(argv)
    if args.serve == (args.path is not None):
        parser.error("give either --serve or one PATH")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    memory = MemoryLimit(args.memory_limit_mb)
    torch.set_num_threads(1)  # parallelism comes from our pool; more threads only contend
    gc.freeze()  # torch's many objects: each job's gc.collect() then costs ~0 instead of ~70 ms
    if args.serve:
        _die_with_parent(args.parent_pid)
        return serve(memory)
    request = ValidationRequest(
        path=args.path,
        required_keys=tuple(args.required_key),
        step_key=args.step_key,
        epoch_key=args.epoch_key,
        expected_step=args.expected_step,
        expected_epoch=args.expected_epoch,
        allowed_globals=tuple(args.allow_global),
        check_finite=not args.no_finite,
    )
    verdict = validate(request, memory)
    print(json.dumps(verdict.to_json()))
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main())
