"""Build a tiny synthetic F5-TTS dataset where the unmodified trainer looks for it.

Run with the trainer venv's python (it needs numpy and soundfile, and runs F5's own prep):

    .venv-f5/bin/python integration/f5tts/make_data.py [--name integration_tiny] [--clips 32]

It writes <clips> short 24 kHz mono wavs (tone chords plus a little noise, 0.5-1.5 s) and a
metadata.csv (header `audio_file|text`, absolute paths), then runs
`python -m f5_tts.train.datasets.prepare_csv_wavs <csv> <out> --pretrain` with the shim on
PYTHONPATH. <out> is <f5_tts package>/../../data/<name>_char, the folder train.py's
load_dataset/get_tokenizer read (raw.arrow, duration.json, vocab.txt) for tokenizer "char".
The wavs stay in <out>/wavs: raw.arrow records their absolute paths. Re-running rebuilds <out>.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile  # type: ignore[import-not-found,unused-ignore]  # trainer venv only

SHIM_DIR = Path(__file__).resolve().parent / "shim"
RATE = 24_000
WORDS = ("low", "high", "tone", "hum", "buzz", "chime", "soft", "loud", "one", "two", "three", "four")


def package_root() -> Path:
    """The installed f5_tts folder, found without importing it.

    f5_tts is a namespace package (no __init__.py): any folder named f5_tts on sys.path (this
    repository's integration/f5_tts when the cwd is integration/) would join it, so pick the
    portion that really holds the trainer.
    """
    spec = importlib.util.find_spec("f5_tts")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("f5_tts is not installed in this interpreter; run with the trainer venv's python")
    for location in spec.submodule_search_locations:
        if (Path(location) / "train" / "train.py").is_file():
            return Path(location)
    sys.exit(f"no f5_tts/train/train.py in {list(spec.submodule_search_locations)}")


def clip(rng: np.random.Generator) -> np.ndarray:
    seconds = rng.uniform(0.5, 1.5)
    t = np.arange(int(seconds * RATE)) / RATE
    wave = 0.02 * rng.standard_normal(t.size)
    for _ in range(3):  # a random three-tone chord
        wave += rng.uniform(0.1, 0.3) * np.sin(2 * np.pi * rng.uniform(110, 880) * t)
    fade = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.02)  # 20 ms fades, no clicks
    out: np.ndarray = (wave * fade).astype(np.float32)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="integration_tiny", help="datasets.name in the Hydra config")
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    out = (package_root() / ".." / ".." / "data" / f"{args.name}_char").resolve()
    if out.exists():
        shutil.rmtree(out)
    wavs = out / "wavs"
    wavs.mkdir(parents=True)

    rng = np.random.default_rng(args.seed)
    metadata = out / "metadata.csv"
    with metadata.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter="|")
        writer.writerow(["audio_file", "text"])
        for i in range(args.clips):
            path = wavs / f"clip_{i:04d}.wav"
            soundfile.write(path, clip(rng), RATE, subtype="PCM_16")
            # Every text has a space: get_tokenizer asserts " " is index 0 of the sorted vocab.
            text = " ".join(rng.choice(WORDS, size=int(rng.integers(2, 5))))
            writer.writerow([str(path), text])

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SHIM_DIR), env.get("PYTHONPATH", "")) if p)
    command = [sys.executable, "-m", "f5_tts.train.datasets.prepare_csv_wavs"]
    command += [str(metadata), str(out), "--pretrain", "--workers", "1"]
    # cwd: `-m` puts it on sys.path, so it must not hold a folder named f5_tts.
    subprocess.run(command, env=env, cwd=out, check=True)
    print(f"dataset ready: {out}")


if __name__ == "__main__":
    main()
