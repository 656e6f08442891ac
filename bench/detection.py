#!/usr/bin/env python3
"""Detection latency: how long after a hang's budget, and after a NaN line is printed,
the supervisor acts — measured from the trainer's side, with the real CLI.

A small trainer prints F5-TTS-style progress bars (`loss=…, update=N`) under the
`f5-tts` adapter, then either goes silent (alive: a hang) or prints `loss=nan`. It
notes the wall time of its last line, and of the SIGTERM the supervisor sends it:

  hang   SIGTERM - last line - timeout_s    (the claim: under 1 s)
  nan    SIGTERM - the nan line              (the claim: under 1 s)

Each case runs --rounds times; the relaunched attempt exits 0 at once.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

TRAINER = """
import signal, sys, time
from pathlib import Path
mode, out = sys.argv[1], Path(sys.argv[2])
if out.exists():
    sys.exit(0)  # the relaunch: done
def on_term(*_):
    out.write_text(f"{last} {time.time()}")
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
last = 0.0
for n in range(1, 41):
    loss = "nan" if mode == "nan" and n == 40 else f"{1 / n:.3f}"
    print(f"Epoch 1/9:  {n}%|##  | {n}/40 [00:01<00:01, 9.0update/s, loss={loss}, update={n}]", flush=True)
    last = time.time()
    time.sleep(0.05)
while True:
    signal.pause()
"""


def run_case(work: Path, mode: str, timeout_s: float, round_: int) -> float:
    """One supervised run; the latency past what the claim allows for (seconds)."""
    trainer = work / "trainer.py"
    trainer.write_text(TRAINER)
    out = work / f"{mode}.times"
    out.unlink(missing_ok=True)
    (work / "ckpts").mkdir(exist_ok=True)
    state = work / f"state-{mode}-{round_}"
    config = work / f"{mode}.toml"
    config.write_text(
        f"[run]\ncommand = {json.dumps([sys.executable, str(trainer), mode, str(out)])}\n"
        f"state_dir = {json.dumps(str(state))}\n"
        f'[adapter]\nname = "f5-tts"\ncheckpoint_dir = {json.dumps(str(work / "ckpts"))}\n'
        f"[heartbeat]\ntimeout_s = {timeout_s}\nstartup_timeout_s = 60\n"
        "[restart]\nbackoff_initial_s = 0\nbackoff_max_s = 0\n"
        '[gpu]\nprobe = "off"\n'
    )
    subprocess.run(
        [sys.executable, "-m", "supervisor.cli", "run", "-c", str(config)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    last, term = (float(x) for x in out.read_text().split())
    return term - last - (timeout_s if mode == "hang" else 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--timeout-s", type=float, default=2.0, help="the hang budget ([heartbeat] timeout_s)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("hang", "nan"):
            extra = [run_case(Path(tmp), mode, args.timeout_s, n) for n in range(args.rounds)]
            what = (
                f"SIGTERM - last line - timeout_s ({args.timeout_s:g} s)"
                if mode == "hang"
                else "SIGTERM - nan line"
            )
            print(
                f"{mode}: {what}: median {statistics.median(extra) * 1000:.0f} ms, "
                f"max {max(extra) * 1000:.0f} ms over {args.rounds} runs "
                f"(claim < 1000 ms: max / claim = {max(extra):.3f})"
            )


if __name__ == "__main__":
    main()
