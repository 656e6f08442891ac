"""A data-parallel trainer for torchrun on CPU (gloo): every rank all-reduces each step
and rank 0 sends heartbeats.

usage: torchrun --standalone --nproc-per-node=2 ddp_twin.py MODE STEPS
MODE "crash": rank 1 exits 1 at step 10; "hang": rank 1 stops at step 10, alive, so
rank 0 waits in its all-reduce (gloo's timeout is 30 minutes); "none". A fault fires once
(a marker file in the cwd remembers it).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from supervisor.client import heartbeat


def main(mode: str, steps: int) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    fired = Path(f"fault-{mode}.done")
    armed = mode != "none" and not fired.exists()
    total = torch.zeros(1)
    for step in range(steps):
        if armed and rank == 1 and step == 10:
            fired.write_text("1")
            if mode == "crash":
                print(f"rank {rank}: simulated crash at step {step}", flush=True)
                os._exit(1)
            signal.pause()
        total += 1
        dist.all_reduce(total)
        if rank == 0:
            heartbeat(step=step, loss=1.0 / (step + 1))
        time.sleep(0.02)
    print(f"rank {rank}: done after {steps} steps", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
