"""Resume planning: pure. Files + verdicts + verified copies + the trainer's resume rule
-> what to move aside, what to restore, and proof of where the trainer will land.

The target is the newest *complete* verified state: one verified file per role (G and D
of the same step, for paired layouts), each either still on disk unchanged or kept as a
verified copy in the store. Then, repeatedly, the adapter's model of the trainer's own
selection rule runs on the directory as it will be; whatever it would pick instead of
the target is moved aside. The plan is good only if, in the end, the trainer's rule
lands exactly on the target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path

from trainer_adapters.base import Layout, NamedCheckpoint, RuleFails


class Status(StrEnum):
    OK = "ok"
    REJECTED = "rejected"
    UNVERIFIED = "unverified"  # not judged yet (still being written, or never seen)
    UNKNOWN = "unknown"  # the validator failed on it: nothing certain is known


@dataclass(frozen=True)
class Candidate:
    """A checkpoint file on disk now. Its step is the content's when the name has none."""

    ckpt: NamedCheckpoint
    status: Status
    reason: str | None = None


@dataclass(frozen=True)
class Snapshot:
    """A verified copy in the store (state_dir/verified) of a file the trainer wrote."""

    role: str
    step: int
    original: Path
    copy: Path
    in_place: bool = False


@dataclass(frozen=True)
class Move:
    path: Path
    reason: str


@dataclass(frozen=True)
class Restore:
    copy: Path
    path: Path
    step: int


@dataclass(frozen=True)
class Plan:
    target_step: int | None  # None: no verified state, the trainer starts from scratch
    target: dict[str, Path]  # role -> the file the trainer must load
    moves: list[Move] = field(default_factory=list)
    restores: list[Restore] = field(default_factory=list)
    lands_on: dict[str, Path] = field(default_factory=dict)  # the trainer's rule, run on the result

    blocked: list[Move] = field(default_factory=list)  # moves refused: files we could not judge
    # With no complete verified state to resume from, files the trainer could load
    # (verified, or intact but lacking keys a resume needs) are left where they are: the
    # trainer starts as it would alone, never from scratch on the planner's word.
    left_to_trainer: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        if self.blocked:
            return False
        if not self.target and self.left_to_trainer:
            return set(self.lands_on.values()) <= set(self.left_to_trainer)
        return self.lands_on == self.target

    @property
    def problem(self) -> str | None:
        if self.blocked:
            first = self.blocked[0]
            return f"cannot verify {first.path} ({first.reason}), and the trainer would load it; not guessing"
        if self.ok:
            return None
        wants = ", ".join(str(p) for p in self.target.values()) or "a fresh start"
        lands = ", ".join(str(p) for p in self.lands_on.values()) or "a fresh start"
        return f"the trainer's resume rule would load {lands}, not the verified {wants}"

    def summary(self) -> str:
        if self.target_step is None and self.lands_on:
            names = ", ".join(p.name for p in self.lands_on.values())
            start = f"no complete verified state: the trainer starts as it would alone, from {names}"
        elif self.target_step is None:
            start = "no verified checkpoint: the trainer starts from scratch"
        else:
            start = f"resume from step {self.target_step} ({', '.join(p.name for p in self.target.values())})"
        parts = [start]
        if self.moves:
            parts.append(f"move aside {len(self.moves)}: " + ", ".join(m.path.name for m in self.moves))
        if self.restores:
            parts.append(f"restore {len(self.restores)}: " + ", ".join(r.path.name for r in self.restores))
        if not self.ok:
            parts.append(f"REFUSED: {self.problem}")
        return "; ".join(parts)


@dataclass(frozen=True)
class _Source:
    role: str
    step: int
    path: Path  # where the trainer will find it
    copy: Path | None = None  # set when it must be restored from the store first
    in_place: bool = False


def plan(
    layout: Layout,
    candidates: Sequence[Candidate],
    snapshots: Sequence[Snapshot] = (),
    *,
    below_step: int | None = None,
    below_reason: str = "saved after the run went bad",
) -> Plan:
    """The resume plan. `below_step` excludes states at or after that step (e.g. saved
    after the loss went NaN); such files are moved aside if the trainer would pick them."""
    target = _newest_complete_state(layout, candidates, snapshots, below_step)
    target_paths = {s.role: s.path for s in target}
    left = [] if target else [c.ckpt.path for c in candidates if _loadable_and_wanted(c, below_step)]
    restores = [Restore(s.copy, s.path, s.step) for s in target if s.copy is not None]
    restored = [
        NamedCheckpoint(s.path, s.role, s.step, in_place=s.in_place) for s in target if s.copy is not None
    ]
    moves = [
        Move(c.ckpt.path, f"rejected: {c.reason}")
        for c in candidates
        if c.status is Status.REJECTED and c.ckpt.path not in left
    ]
    moves += [
        Move(c.ckpt.path, "not the verified file: replaced by its verified copy")
        for c in candidates
        if c.ckpt.path in {r.path for r in restores} and c.status is not Status.REJECTED
    ]
    by_path = {c.ckpt.path: c for c in candidates}
    while True:
        moved = {m.path for m in moves}
        files = [c.ckpt for c in candidates if c.ckpt.path not in moved] + restored
        try:
            picked = layout.pick(files)
        except RuleFails as failure:
            # A name the trainer's own sort cannot handle: it would crash or start over.
            # (Never the target: of tied files, the others make way for it.)
            culprits = [
                f.path
                for f in failure.culprits
                if f.path in by_path and f.path not in moved and f.path not in target_paths.values()
            ]
            moves += [
                Move(path, f"the trainer's resume rule fails on it: {failure.why}") for path in culprits
            ]
            picked = {}
            if culprits:
                continue
            break
        wrong = [ckpt for role, ckpt in picked.items() if target_paths.get(role) != ckpt.path]
        wrong = [ckpt for ckpt in wrong if ckpt.path in by_path and ckpt.path not in moved | set(left)]
        if not wrong:
            break
        for ckpt in wrong:
            moves.append(Move(ckpt.path, _why_not(by_path[ckpt.path], below_step, below_reason)))
    # A file the validator could not judge is never moved aside on a guess: a broken
    # validator must not turn into "every checkpoint is bad, start from scratch".
    blocked = [m for m in moves if by_path[m.path].status is Status.UNKNOWN]
    return Plan(
        target_step=target[0].step if target else None,
        target=target_paths,
        moves=moves,
        restores=restores,
        lands_on={role: ckpt.path for role, ckpt in picked.items()},
        blocked=blocked,
        left_to_trainer=left,
    )


def _loadable_and_wanted(candidate: Candidate, below_step: int | None) -> bool:
    """Verified, or intact but without keys a resume needs (released weights, an EMA-only
    file the trainer loads as a new start): not ours to throw out into a fresh start."""
    step = candidate.ckpt.step
    if below_step is not None and step is not None and step >= below_step:
        return False
    if candidate.status is Status.OK:
        return True
    return candidate.status is Status.REJECTED and (candidate.reason or "").startswith("missing key")


def _newest_complete_state(
    layout: Layout, candidates: Sequence[Candidate], snapshots: Sequence[Snapshot], below_step: int | None
) -> list[_Source]:
    sources: dict[int, dict[str, _Source]] = {}
    for snap in snapshots:
        source = _Source(snap.role, snap.step, snap.original, snap.copy, snap.in_place)
        sources.setdefault(snap.step, {})[snap.role] = source
    on_disk: dict[tuple[int, str], list[NamedCheckpoint]] = {}
    for c in candidates:
        if c.status is Status.OK and c.ckpt.step is not None:
            on_disk.setdefault((c.ckpt.step, c.ckpt.role), []).append(c.ckpt)
    for (step, role), files in on_disk.items():
        # A verified file still on disk beats its copy (nothing to restore). Of several at
        # one step (last.pt and ckpt_30.pt), the one the trainer's own rule prefers.
        chosen = _pick_quietly(layout, files).get(role) if len(files) > 1 else None
        ckpt = chosen if chosen is not None and chosen in files else files[0]
        sources.setdefault(step, {})[role] = _Source(role, step, ckpt.path)
    for step in sorted(sources, reverse=True):
        if below_step is not None and step >= below_step:
            continue
        state = sources[step]
        if all(role in state for role in layout.roles):
            return [state[role] for role in layout.roles]
    return []


def _pick_quietly(layout: Layout, files: Sequence[NamedCheckpoint]) -> dict[str, NamedCheckpoint]:
    try:
        return layout.pick(files)
    except RuleFails:
        return {}


def _why_not(candidate: Candidate, below_step: int | None, below_reason: str) -> str:
    step = candidate.ckpt.step
    if below_step is not None and step is not None and step >= below_step:
        return below_reason
    if candidate.status is Status.UNKNOWN:
        return f"could not be verified: {candidate.reason}"
    if candidate.status is Status.UNVERIFIED:
        return "not verified, and the trainer would pick it"
    return "verified, but not part of the newest complete verified state, and the trainer would pick it"


def with_content_step(ckpt: NamedCheckpoint, step: int | None) -> NamedCheckpoint:
    """An in-place file (a fixed name such as last.pt), or one of a layout whose names do
    not count progress, gets the step its content reported. Other files without a step
    in their name stay without one: the trainer's rule orders them by name, so their
    content step must not make them a resume target."""
    takes_it = ckpt.in_place or ckpt.content_step
    return replace(ckpt, step=step) if takes_it and ckpt.step is None and step is not None else ckpt


def retention(snapshots: Sequence[Snapshot], keep: int) -> list[Snapshot]:
    """The copies to drop so that only the newest `keep` verified steps remain; the
    newest verified state is never dropped."""
    steps = sorted({s.step for s in snapshots}, reverse=True)
    kept = set(steps[: max(1, keep)])
    return [s for s in snapshots if s.step not in kept]
