"""Small pure helpers the adapters are built from: name patterns, the trainers' sort
keys, log-line readings and command-line checks."""

from __future__ import annotations

import fnmatch
import functools
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from trainer_adapters.base import ArgRule, LineRule, NamedCheckpoint, RuleFails, Said


@functools.lru_cache(maxsize=512)
def compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


# --- file names -------------------------------------------------------------------


@dataclass(frozen=True)
class NamePattern:
    """A file name (full match) of one kind of resume checkpoint. Groups `step`,
    `epoch` and `role` are read when present; otherwise `role` is fixed here."""

    regex: str
    role: str = "model"
    in_place: bool = False
    content_step: bool = False

    def match(self, path: Path) -> NamedCheckpoint | None:
        m = compiled(self.regex).fullmatch(path.name)
        if m is None:
            return None
        groups = m.groupdict()
        step = None if self.in_place or self.content_step else _int(groups.get("step"))
        return NamedCheckpoint(
            path,
            groups.get("role") or self.role,
            step,
            epoch=_int(groups.get("epoch")),
            in_place=self.in_place,
            content_step=self.content_step,
        )


def parse_by(patterns: Sequence[NamePattern], path: Path) -> NamedCheckpoint | None:
    for pattern in patterns:
        if (found := pattern.match(path)) is not None:
            return found
    return None


def ignored_by(kinds: Sequence[tuple[str, str]], path: Path) -> str | None:
    """The reason of the first (name regex, reason) pair whose regex matches the name."""
    return next((why for regex, why in kinds if compiled(regex).fullmatch(path.name)), None)


def _int(text: str | None) -> int | None:
    return int(text) if text is not None else None


# --- the trainers' sort keys ----------------------------------------------------------


def all_digits(text: str) -> int | None:
    """`int("".join(filter(str.isdigit, text)))`, the sort key VITS, GPT-SoVITS s2,
    Applio and F5-TTS use; None where that expression raises (no digits at all)."""
    try:
        return int("".join(filter(str.isdigit, text)))
    except ValueError:
        return None


def max_by(
    files: Sequence[NamedCheckpoint],
    key: Callable[[NamedCheckpoint], int | None],
    why: str,
) -> NamedCheckpoint | None:
    """The trainer's `sorted(files, key=...)[-1]`, `files` in directory order (as `glob`
    and `os.listdir` list them): Python's sort is stable, so of equal keys (G_010 and
    G_10) the one listed last wins. RuleFails when `key` would raise for some file."""
    if not files:
        return None
    broken = [f for f in files if key(f) is None]
    if broken:
        raise RuleFails(broken, why)
    return max(reversed(files), key=lambda f: key(f) or 0)


GLOB_MAGIC = re.compile(r"[*?[]")


def glob_misses(directory: Path) -> str | None:
    """Why `glob.glob(os.path.join(directory, pattern))` cannot be trusted to find the
    files in `directory`: a component with glob metacharacters is a pattern. One that does
    not match its own name (`voice[v2]` matches `voicev` and `voice2`) hides the files;
    one that does (`voice*`) also finds those of every directory it matches."""
    for part in directory.parts:
        if GLOB_MAGIC.search(part):
            effect = (
                "never finds the files in it"
                if not fnmatch.fnmatchcase(part, part)
                else "also finds the files of every other directory it matches"
            )
            return (
                f"the directory name {part!r} holds glob metacharacters ([, *, ?): the trainer's own "
                f"glob reads it as a pattern and {effect}; rename it (--run-name, -m or the "
                "experiment name) without them"
            )
    return None


# --- output lines -----------------------------------------------------------------------


@dataclass(frozen=True)
class Reading:
    said: Said
    line: str
    step: int | None = None
    epoch: int | None = None
    losses: tuple[float, ...] = ()
    path: str | None = None
    explain: str = ""

    @property
    def nonfinite(self) -> bool:
        return any(not math.isfinite(v) for v in self.losses)


def number(text: str) -> float | None:
    """A loss as printed: Python (`nan`, `inf`, `1e-05`), tqdm/Lightning (`nan.0`,
    `inf.0`, `-inf.`, `3.67e+3`). None for anything else."""
    t = text.strip().strip("'\"").lower()
    for prefix, value in (("-inf", -math.inf), ("+inf", math.inf), ("inf", math.inf), ("nan", math.nan)):
        if t.startswith(prefix) and t[len(prefix) :] in ("", ".", ".0", "inity"):
            return value
    try:
        return float(t)
    except ValueError:
        return None


def read_line(rules: Sequence[LineRule], line: str) -> list[Reading]:
    """Every rule that matches the line, in rule order."""
    found = []
    for rule in rules:
        m = compiled(rule.pattern).search(line)
        if m is None:
            continue
        g = m.groupdict()
        losses = tuple(
            v for v in (number(p) for p in (g.get("losses") or "").split(",") if p.strip()) if v is not None
        )
        if g.get("loss") is not None and (v := number(g["loss"])) is not None:
            losses += (v,)
        found.append(
            Reading(
                rule.said,
                line,
                step=_int(g.get("step")),
                epoch=_int(g.get("epoch")),
                losses=losses,
                path=g.get("path"),
                explain=rule.explain,
            )
        )
    return found


# --- command lines ----------------------------------------------------------------------


def arg_problems(rules: Sequence[ArgRule], argv: Sequence[str]) -> list[str]:
    """The problems of the rules whose flag the command sets."""
    problems = []
    for rule in rules:
        flagged = any(_sets(argv, flag, rule.boolean) for flag in rule.flags)
        if flagged or (rule.applies is not None and rule.applies(argv)):
            problems.append(rule.problem)
    return problems


def _sets(argv: Sequence[str], flag: str, boolean: bool) -> bool:
    for i, arg in enumerate(argv):
        if arg == flag:
            following = argv[i + 1] if i + 1 < len(argv) else ""
            return not (boolean and following.lower() in ("false", "0", "no"))
        if arg.startswith(flag + "="):
            return not (boolean and arg.split("=", 1)[1].lower() in ("false", "0", "no"))
    return False


def config_flag(*flags: str) -> Callable[[Sequence[str], object], list[str]]:
    """The adapters' `config_files` for trainers that take their config file as a flag."""

    def files(argv: Sequence[str], options: object) -> list[str]:
        value = flag_value(argv, *flags)
        return [value] if value else []

    return files


def flag_value(argv: Sequence[str], *flags: str) -> str | None:
    """The value given to the first of `flags` (`-m X`, `--model=X`), if any."""
    for i, arg in enumerate(argv):
        for flag in flags:
            if arg == flag and i + 1 < len(argv):
                return argv[i + 1]
            if arg.startswith(flag + "="):
                return arg.split("=", 1)[1]
    return None


# --- the trainer's packages -----------------------------------------------------------------


def release(version: str | None) -> tuple[int, int] | None:
    """(major, minor) of a version string such as "2.6.6" or "2.13.0+cpu"."""
    if version is None:
        return None
    m = re.match(r"(\d+)\.(\d+)", version)
    return (int(m[1]), int(m[2])) if m else None
