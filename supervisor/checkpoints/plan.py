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

WRITING_REASON = "still being written"  # how every reason of a WRITING candidate begins


class Status(StrEnum):
    OK = "ok"
    REJECTED = "rejected"
    UNVERIFIED = "unverified"  # not judged yet (never seen)
    UNKNOWN = "unknown"  # the validator failed on it: nothing certain is known
    WRITING = "writing"  # still being written: never moved, never resumed from


@dataclass(frozen=True)
class Candidate:
    """An entry on disk now, named like a checkpoint. Its step is the content's when the
    name has none. `not_a_file`: it is a link, a directory, a FIFO... (REJECTED, with
    `reason` saying which): left alone unless the trainer's rule would pick it.
    `written_ns`: its last write, which tells two saves of one step apart."""

    ckpt: NamedCheckpoint
    status: Status
    reason: str | None = None
    not_a_file: bool = False
    written_ns: int = 0


@dataclass(frozen=True)
class Snapshot:
    """A verified copy in the store (state_dir/verified) of a file the trainer wrote."""

    role: str
    step: int
    original: Path
    copy: Path
    in_place: bool = False
    checksum: str | None = None  # the verified version's (a re-saved name is a new version)


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

    blocked: list[Move] = field(default_factory=list)  # moves refused: files unjudged or being written
    # With no complete verified state to resume from, files the trainer could load
    # (verified, or intact but lacking keys a resume needs) are left where they are: the
    # trainer starts as it would alone, never from scratch on the planner's word.
    left_to_trainer: list[Path] = field(default_factory=list)
    also_loads: dict[str, Path] = field(default_factory=dict)  # roles outside a state it loads too
    trainer_deletes: list[Path] = field(default_factory=list)  # what its own pruning removes at start
    ignored: list[Move] = field(default_factory=list)  # no checkpoint files, left alone: not picked
    unseen: str | None = None  # why the trainer's own listing cannot find the target
    unit: str = "step"  # what the trainer's states count: "step" or "epoch"

    @property
    def ok(self) -> bool:
        if self.blocked or set(self.target.values()) & set(self.trainer_deletes):
            return False
        if not self.target and self.left_to_trainer:
            return set(self.lands_on.values()) <= set(self.left_to_trainer)
        return self.lands_on == self.target

    @property
    def problem(self) -> str | None:
        if self.blocked:
            first = self.blocked[0]
            if first.reason.startswith(WRITING_REASON):
                return f"{first.path} is {first.reason}, and the trainer would load it; not moving it"
            return f"cannot verify {first.path} ({first.reason}), and the trainer would load it; not guessing"
        if self.ok:
            return None
        deleted = set(self.target.values()) & set(self.trainer_deletes)
        if deleted:
            return (
                f"the trainer deletes {', '.join(sorted(map(str, deleted)))} when it starts (its own pruning)"
            )
        wants = ", ".join(str(p) for p in self.target.values()) or "a fresh start"
        lands = ", ".join(str(p) for p in self.lands_on.values()) or "a fresh start"
        why = f": {self.unseen}" if self.unseen else ""
        return f"the trainer's resume rule would load {lands}, not the verified {wants}{why}"

    def summary(self) -> str:
        if self.target_step is None and self.lands_on:
            names = ", ".join(p.name for p in self.lands_on.values())
            start = f"no complete verified state: the trainer starts as it would alone, from {names}"
        elif self.target_step is None:
            start = "no verified checkpoint: the trainer starts from scratch"
        else:
            start = f"resume from {self.unit} {self.target_step} ({', '.join(p.name for p in self.target.values())})"
        parts = [start]
        if self.moves:
            parts.append(f"move aside {len(self.moves)}: " + ", ".join(m.path.name for m in self.moves))
        if self.restores:
            parts.append(f"restore {len(self.restores)}: " + ", ".join(r.path.name for r in self.restores))
        if self.also_loads:
            parts.append("the trainer also loads " + ", ".join(p.name for p in self.also_loads.values()))
        if self.trainer_deletes:
            deleted = ", ".join(p.name for p in self.trainer_deletes)
            parts.append(f"the trainer itself deletes {deleted} when it starts")
        if self.ignored:
            parts.append("left alone (not checkpoint files): " + ", ".join(m.path.name for m in self.ignored))
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
    ckpt: NamedCheckpoint | None = None  # as named on disk (or as the restored file will be)
    written_ns: int = 0


def plan(
    layout: Layout,
    candidates: Sequence[Candidate],
    snapshots: Sequence[Snapshot] = (),
    *,
    below_step: int | None = None,
    below_reason: str = "saved after the run went bad",
    unit: str = "step",
) -> Plan:
    """The resume plan. `candidates` come in directory order. `below_step` excludes
    states at or after that step (e.g. saved after the loss went NaN); such files are
    moved aside if the trainer would pick them."""
    target = _newest_complete_state(layout, candidates, snapshots, below_step)
    target_paths = {s.role: s.path for s in target}
    left = [] if target else [c.ckpt.path for c in candidates if _loadable_and_wanted(c, below_step)]
    restores = [Restore(s.copy, s.path, s.step) for s in target if s.copy is not None]
    restored = [_restored(layout, s) for s in target if s.copy is not None]
    moves = [
        Move(c.ckpt.path, f"rejected: {c.reason}")
        for c in candidates
        if c.status is Status.REJECTED and not c.not_a_file and c.ckpt.path not in left
    ]
    moves += [Move(c.ckpt.path, c.ckpt.interferes) for c in candidates if c.ckpt.interferes]
    restore_paths = {r.path for r in restores}
    moves += [
        Move(c.ckpt.path, _in_the_way(c))
        for c in candidates
        if c.ckpt.path in restore_paths and (c.status is not Status.REJECTED or c.not_a_file)
    ]
    by_path = {c.ckpt.path: c for c in candidates}
    moves, picked = _settle_picks(
        layout, candidates, restored, target_paths, moves, left, by_path, below_step, below_reason
    )
    # A file the validator could not judge, or one still being written, is never moved
    # aside: a broken validator must not turn into "every checkpoint is bad, start from
    # scratch", and a writer would go on writing into the quarantine.
    blocked = [
        Move(m.path, _blocked(by_path[m.path]))
        for m in moves
        if by_path[m.path].status in (Status.UNKNOWN, Status.WRITING)
    ]
    moved = {m.path for m in moves}
    remaining = [c.ckpt for c in candidates if c.ckpt.path not in moved] + restored
    lands_on = {role: ckpt.path for role, ckpt in picked.items() if role in layout.roles}
    return Plan(
        target_step=target[0].step if target else None,
        target=target_paths,
        moves=moves,
        restores=restores,
        lands_on=lands_on,
        blocked=blocked,
        left_to_trainer=left,
        also_loads={role: ckpt.path for role, ckpt in picked.items() if role not in layout.roles},
        trainer_deletes=[f.path for f in layout.deletes_at_start(remaining)],
        ignored=[
            Move(c.ckpt.path, c.reason or "") for c in candidates if c.not_a_file and c.ckpt.path not in moved
        ],
        unseen=next((why for s in target if s.ckpt is not None and (why := layout.unseen(s.ckpt))), None),
        unit=unit,
    )


def _settle_picks(
    layout: Layout,
    candidates: Sequence[Candidate],
    restored: list[NamedCheckpoint],
    target_paths: dict[str, Path],
    moves: list[Move],
    left: list[Path],
    by_path: dict[Path, Candidate],
    below_step: int | None,
    below_reason: str,
) -> tuple[list[Move], dict[str, NamedCheckpoint]]:
    """Run the trainer's rule on the directory as it will be, and move aside whatever it
    would pick instead of the target, until it picks nothing else."""
    while True:
        moved = {m.path for m in moves}
        files = [c.ckpt for c in candidates if c.ckpt.path not in moved] + restored
        try:
            picked = layout.pick(files)
        except RuleFails as failure:
            # A name the trainer's own sort cannot handle: it would crash or start over.
            culprits = [
                f.path
                for f in failure.culprits
                if f.path in by_path and f.path not in moved and f.path not in target_paths.values()
            ]
            moves = moves + [
                Move(path, f"the trainer's resume rule fails on it: {failure.why}") for path in culprits
            ]
            if culprits:
                continue
            return moves, {}
        wrong = [
            ckpt
            for role, ckpt in picked.items()
            if _unwanted(role, ckpt, layout, target_paths, by_path) and ckpt.path not in moved | set(left)
        ]
        if not wrong:
            return moves, picked
        moves = moves + [
            Move(ckpt.path, _why_not(by_path[ckpt.path], below_step, below_reason)) for ckpt in wrong
        ]


def _unwanted(
    role: str,
    ckpt: NamedCheckpoint,
    layout: Layout,
    target_paths: dict[str, Path],
    by_path: dict[Path, Candidate],
) -> bool:
    """The trainer would load this file, and it must not: it is not the target of its
    role, or (for a role outside a resume state, loaded besides it) it is not verified."""
    candidate = by_path.get(ckpt.path)
    if candidate is None:
        return False  # a restored copy: the plan's own
    if role in layout.roles:
        return target_paths.get(role) != ckpt.path
    return candidate.status is not Status.OK


def _restored(layout: Layout, source: _Source) -> NamedCheckpoint:
    """The file a restore puts back, as the trainer's rule will see it."""
    named = source.ckpt or layout.parse(source.path)
    base = named if named is not None else NamedCheckpoint(source.path, source.role, None)
    return replace(base, path=source.path, role=source.role, step=source.step, in_place=source.in_place)


def _loadable_and_wanted(candidate: Candidate, below_step: int | None) -> bool:
    """Verified, or intact but without keys a resume needs (released weights, an EMA-only
    file the trainer loads as a new start): not ours to throw out into a fresh start."""
    step = candidate.ckpt.step
    if below_step is not None and step is not None and step >= below_step:
        return False
    if candidate.status is Status.OK:
        return True
    return candidate.status is Status.REJECTED and (candidate.reason or "").startswith("missing key")


_StateKey = tuple[int, int | None]  # (step, save)


def _newest_complete_state(
    layout: Layout, candidates: Sequence[Candidate], snapshots: Sequence[Snapshot], below_step: int | None
) -> list[_Source]:
    sources: dict[_StateKey, dict[str, _Source]] = {}
    for snap in snapshots:
        named = layout.parse(snap.original)
        key = (snap.step, named.save if named is not None else None)
        source = _Source(snap.role, snap.step, snap.original, snap.copy, snap.in_place, named)
        sources.setdefault(key, {})[snap.role] = source
    on_disk: dict[tuple[_StateKey, str], list[Candidate]] = {}
    for c in candidates:
        if c.status is Status.OK and c.ckpt.step is not None and c.ckpt.role in layout.roles:
            on_disk.setdefault(((c.ckpt.step, c.ckpt.save), c.ckpt.role), []).append(c)
    for (key, role), found in on_disk.items():
        # A verified file still on disk beats its copy (nothing to restore). Of several of
        # one state and role: beside a fixed name (last.pt and ckpt_30.pt), the one the
        # trainer's own rule prefers; else (two launches' saves of one step) the newer
        # launch's, the one written last.
        chosen = None
        if any(c.ckpt.in_place for c in found):
            chosen = _pick_quietly(layout, [c.ckpt for c in found]).get(role)
        best = next((c for c in found if c.ckpt == chosen), None) or max(found, key=lambda c: c.written_ns)
        sources.setdefault(key, {})[role] = _Source(
            role, key[0], best.ckpt.path, ckpt=best.ckpt, written_ns=best.written_ns
        )
    complete = [
        state
        for key, state in sources.items()
        if all(role in state for role in layout.roles) and (below_step is None or key[0] < below_step)
    ]
    if not complete:
        return []
    newest = max(complete, key=lambda state: _state_order(layout, state))
    return [newest[role] for role in layout.roles]


def _state_order(layout: Layout, state: dict[str, _Source]) -> tuple[tuple[int, ...], int]:
    first = state[layout.roles[0]]
    named = first.ckpt or NamedCheckpoint(first.path, first.role, first.step)
    return layout.rank(replace(named, step=first.step)), max(s.written_ns for s in state.values())


def _pick_quietly(layout: Layout, files: Sequence[NamedCheckpoint]) -> dict[str, NamedCheckpoint]:
    try:
        return layout.pick(files)
    except RuleFails:
        return {}


def _in_the_way(candidate: Candidate) -> str:
    if candidate.not_a_file:
        return f"in the way of the verified copy to restore there: {candidate.reason}"
    return "not the verified file: replaced by its verified copy"


def _blocked(candidate: Candidate) -> str:
    if candidate.status is Status.WRITING:
        return candidate.reason or WRITING_REASON
    return f"could not be verified: {candidate.reason or 'validator error'}"


def _why_not(candidate: Candidate, below_step: int | None, below_reason: str) -> str:
    step = candidate.ckpt.step
    if below_step is not None and step is not None and step >= below_step:
        return below_reason
    if candidate.not_a_file:
        return f"rejected: {candidate.reason}, and the trainer's rule would pick it"
    if candidate.status is Status.WRITING:
        return candidate.reason or WRITING_REASON
    if candidate.status is Status.UNKNOWN:
        return f"could not be verified: {candidate.reason}"
    if candidate.status is Status.UNVERIFIED:
        return "not verified, and the trainer would pick it"
    if candidate.status is Status.REJECTED:
        return f"rejected: {candidate.reason}"
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
