"""Twin of F5-TTS's Hydra entry point, `src/f5_tts/train/train.py`, as a pip install runs it
(`python -m f5_tts.train.train --config-name NAME [key=value ...]`).

What the real one does and the twin does the same way:
- at import, `os.chdir(files("f5_tts").joinpath("../.."))`: the package root, which is
  `<venv>/lib/pythonX.Y` for a pip install (the repo for an editable one), whatever the cwd;
- checkpoints go to `files("f5_tts").joinpath(f"../../{ckpts.save_dir}")`: below that root, an
  absolute save_dir too (pathlib folds the `//`);
- an exception escaping `main` is reported as Hydra's `run_and_report` does without
  HYDRA_FULL_ERROR: the traceback, then `Set the environment variable HYDRA_FULL_ERROR=1 for a
  complete stack trace.` as the last line, and exit 1.

The training itself is the finetune twin's `Trainer` (f5_tts_twin.py): same files, lines and
faults (faults.json in the package root, the cwd after the chdir). Overrides read:
`ckpts.save_dir`, `ckpts.last_per_updates`, `ckpts.save_per_updates`,
`ckpts.keep_last_n_checkpoints`, `optim.epochs`, and the twin's own `twin.batches`,
`twin.update_s`, `twin.save_pause_s`. The package (`f5_tts/train/train.py` calling `main()`)
is made by the test; this file is its body.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from importlib.resources import files
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from f5_tts_twin import Trainer

HYDRA_HINT = "Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace."


def overrides(argv: list[str]) -> dict[str, str]:
    return dict(arg.lstrip("+").split("=", 1) for arg in argv if "=" in arg and not arg.startswith("-"))


def run(values: dict[str, str]) -> None:
    save_dir = values["ckpts.save_dir"]
    checkpoint_path = str(files("f5_tts").joinpath(f"../../{save_dir}"))
    args = argparse.Namespace(
        learning_rate=1e-5,
        epochs=int(values.get("optim.epochs", "2")),
        save_per_updates=int(values.get("ckpts.save_per_updates", "50000")),
        keep_last_n_checkpoints=int(values.get("ckpts.keep_last_n_checkpoints", "-1")),
        last_per_updates=int(values.get("ckpts.last_per_updates", "5000")),
        twin_batches=int(values.get("twin.batches", "4")),
        twin_update_s=float(values.get("twin.update_s", "0.05")),
        twin_save_pause_s=float(values.get("twin.save_pause_s", "0")),
    )
    Trainer(args, checkpoint_path).train()


def main() -> None:
    os.chdir(str(files("f5_tts").joinpath("../..")))
    values = overrides(sys.argv[1:])
    try:
        run(values)
    except Exception:
        # Hydra logs the job's overrides, prints the traceback it trimmed, then its hint,
        # and exits 1.
        listed = ", ".join(f"'{arg}'" for arg in sys.argv[1:] if "=" in arg and not arg.startswith("-"))
        sys.stderr.write(f"Error executing job with overrides: [{listed}]\n")
        traceback.print_exc(file=sys.stderr)
        sys.stderr.write(f"\n{HYDRA_HINT}\n")
        sys.stderr.flush()
        sys.exit(1)
