"""Resume planning, pure: directory states in, moves/restores and a proof out."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from supervisor.checkpoints.plan import (
    Candidate,
    Move,
    Restore,
    Snapshot,
    Status,
    plan,
    retention,
    with_content_step,
)
from trainer_adapters.base import Expectations, LayoutDefaults, NamedCheckpoint
from trainer_adapters.generic import GenericLayout, GenericOptions
from trainer_adapters.vits_family import GlobLayout

D = Path("/run/ckpt")
STORE = Path("/state/verified")
GENERIC = GenericLayout(GenericOptions(pattern="ckpt_{step}.pt", latest="last.pt", step_key="step"))


@dataclass(frozen=True)
class PairedLayout(LayoutDefaults):
    """Like VITS: newest G_* and newest D_* are picked independently, by digits in the path."""

    roles: tuple[str, ...] = ("G", "D")
    recursive: bool = False

    def ignored(self, path: Path) -> str | None:
        return None

    def parse(self, path: Path) -> NamedCheckpoint | None:
        match = re.fullmatch(r"([GD])_(\d+)\.pth", path.name)
        return NamedCheckpoint(path, match.group(1), int(match.group(2))) if match else None

    def expect(self, ckpt: NamedCheckpoint) -> Expectations:
        return Expectations(required_keys=("model", "iteration"))

    def pick(self, files: Sequence[NamedCheckpoint]) -> dict[str, NamedCheckpoint]:
        chosen = {}
        for role in self.roles:
            mine = [f for f in files if f.role == role]
            if mine:
                chosen[role] = max(mine, key=lambda f: int("".join(re.findall(r"\d", str(f.path)))))
        return chosen


PAIRED = PairedLayout()


def generic(step: int | None, status: Status = Status.OK, name: str | None = None) -> Candidate:
    path = D / (name or f"ckpt_{step}.pt")
    parsed = GENERIC.parse(path)
    assert parsed is not None
    ckpt = NamedCheckpoint(parsed.path, parsed.role, step, in_place=parsed.in_place)
    return Candidate(ckpt, status, "torn" if status is Status.REJECTED else None)


def paired(role: str, step: int, status: Status = Status.OK) -> Candidate:
    ckpt = PAIRED.parse(D / f"{role}_{step}.pth")
    assert ckpt is not None
    return Candidate(ckpt, status, "CRC mismatch" if status is Status.REJECTED else None)


def moved(result_moves: list[Move]) -> set[str]:
    return {m.path.name for m in result_moves}


def test_an_empty_directory_means_a_fresh_start() -> None:
    result = plan(GENERIC, [])
    assert result.ok
    assert result.target_step is None
    assert result.lands_on == {}
    assert "starts from scratch" in result.summary()


def test_a_torn_newest_file_is_moved_aside_and_the_trainer_lands_on_the_verified_one() -> None:
    result = plan(GENERIC, [generic(100), generic(200, Status.REJECTED)])
    assert result.ok
    assert result.target == {"model": D / "ckpt_100.pt"}
    assert result.moves == [Move(D / "ckpt_200.pt", "rejected: torn")]
    assert result.summary() == "resume from step 100 (ckpt_100.pt); move aside 1: ckpt_200.pt"


def test_unverified_newer_files_are_moved_aside_too() -> None:
    result = plan(GENERIC, [generic(100), generic(300, Status.UNVERIFIED)])
    assert result.ok
    assert moved(result.moves) == {"ckpt_300.pt"}
    assert "not verified" in result.moves[0].reason


def test_with_nothing_verified_every_pickable_file_goes_and_the_trainer_starts_fresh() -> None:
    result = plan(GENERIC, [generic(100, Status.REJECTED), generic(200, Status.UNVERIFIED)])
    assert result.ok
    assert result.target_step is None
    assert moved(result.moves) == {"ckpt_100.pt", "ckpt_200.pt"}


def test_older_verified_files_stay_where_they_are() -> None:
    result = plan(GENERIC, [generic(100), generic(200), generic(300)])
    assert result.ok
    assert result.moves == []
    assert result.target_step == 300


def test_pairs_resume_only_from_a_step_where_both_halves_are_verified() -> None:
    files = [paired("G", 100), paired("D", 100), paired("G", 200), paired("D", 200, Status.REJECTED)]
    result = plan(PAIRED, files)
    assert result.ok
    assert result.target == {"G": D / "G_100.pth", "D": D / "D_100.pth"}
    assert moved(result.moves) == {"G_200.pth", "D_200.pth"}
    (lone,) = [m for m in result.moves if m.path.name == "G_200.pth"]
    assert lone.reason.startswith("verified, but not part of the newest complete verified state")


def test_a_torn_re_save_of_the_only_good_state_is_restored_from_its_verified_copy() -> None:
    # VITS re-saves G_200/D_200 under the same names after a resume; the re-save of G was torn.
    files = [paired("G", 200, Status.REJECTED), paired("D", 200)]
    copies = [
        Snapshot("G", 200, D / "G_200.pth", STORE / "200/G_200.pth"),
        Snapshot("D", 200, D / "D_200.pth", STORE / "200/D_200.pth"),
    ]
    result = plan(PAIRED, files, copies)
    assert result.ok
    assert result.target_step == 200
    assert result.restores == [Restore(STORE / "200/G_200.pth", D / "G_200.pth", 200)]
    assert moved(result.moves) == {"G_200.pth"}, "the torn file is kept in quarantine, not overwritten"


def test_a_torn_in_place_latest_file_is_restored_from_its_verified_copy() -> None:
    files = [generic(None, Status.REJECTED, name="last.pt"), generic(300)]
    copies = [Snapshot("model", 450, D / "last.pt", STORE / "450/last.pt", in_place=True)]
    result = plan(GENERIC, files, copies)
    assert result.ok
    assert result.target == {"model": D / "last.pt"}
    assert result.restores == [Restore(STORE / "450/last.pt", D / "last.pt", 450)]


def test_an_older_verified_latest_file_is_moved_so_the_newest_state_wins() -> None:
    files = [generic(500, name="last.pt"), generic(600)]
    result = plan(GENERIC, files)
    assert result.ok
    assert result.target == {"model": D / "ckpt_600.pt"}
    assert moved(result.moves) == {"last.pt"}


def test_a_deleted_file_comes_back_from_its_copy() -> None:
    copies = [Snapshot("model", 700, D / "ckpt_700.pt", STORE / "700/ckpt_700.pt")]
    result = plan(GENERIC, [generic(100)], copies)
    assert result.target_step == 700
    assert result.restores == [Restore(STORE / "700/ckpt_700.pt", D / "ckpt_700.pt", 700)]
    assert result.ok


def test_states_from_a_bad_step_on_are_excluded() -> None:
    files = [generic(100), generic(200), generic(300)]
    result = plan(GENERIC, files, below_step=250, below_reason="saved after the loss went NaN")
    assert result.ok
    assert result.target_step == 200
    assert result.moves == [Move(D / "ckpt_300.pt", "saved after the loss went NaN")]


def test_a_plan_the_trainer_would_not_follow_is_refused() -> None:
    @dataclass(frozen=True)
    class Stubborn(PairedLayout):
        def pick(self, files: Sequence[NamedCheckpoint]) -> dict[str, NamedCheckpoint]:
            # Loads a pretrained file we do not manage, whatever is in the directory.
            return {"G": NamedCheckpoint(Path("/pretrained/G0.pth"), "G", 0)}

    result = plan(Stubborn(), [paired("G", 100), paired("D", 100)])
    assert not result.ok
    assert result.problem is not None
    assert "/pretrained/G0.pth" in result.problem
    assert "REFUSED" in result.summary()


def test_retention_keeps_the_newest_steps_and_never_the_last_one() -> None:
    copies = [Snapshot("model", s, D / f"ckpt_{s}.pt", STORE / f"{s}/ckpt_{s}.pt") for s in (100, 200, 300)]
    assert [s.step for s in retention(copies, keep=2)] == [100]
    assert [s.step for s in retention(copies, keep=0)] == [100, 200]


STATUSES = st.sampled_from([Status.OK, Status.REJECTED, Status.UNVERIFIED])


@given(files=st.dictionaries(st.tuples(st.sampled_from("GD"), st.integers(1, 9)), STATUSES, max_size=14))
def test_any_paired_directory_gets_a_plan_that_lands_on_the_newest_complete_verified_state(
    files: dict[tuple[str, int], Status],
) -> None:
    candidates = [paired(role, step * 100, status) for (role, step), status in files.items()]
    result = plan(PAIRED, candidates)
    complete = [
        step
        for (role, step), status in files.items()
        if status is Status.OK and files.get(("D" if role == "G" else "G", step)) is Status.OK
    ]
    assert result.target_step == (max(complete) * 100 if complete else None)
    assert result.ok, result.summary()
    verified = {c.ckpt.path for c in candidates if c.status is Status.OK}
    if not complete:
        # A verified G without its D is left to the trainer, never moved into a fresh start.
        assert result.left_to_trainer == [c.ckpt.path for c in candidates if c.status is Status.OK]
        assert not {m.path for m in result.moves} & verified
    moved_paths = {m.path for m in result.moves}
    assert not moved_paths & set(result.target.values()), "a target file is never moved"
    assert {c.ckpt.path for c in candidates if c.status is Status.REJECTED} <= moved_paths


def test_a_file_the_validator_failed_on_is_never_moved_on_a_guess() -> None:
    unknown = Candidate(generic(300).ckpt, Status.UNKNOWN, "validator crashed (signal 9)")
    result = plan(GENERIC, [generic(100), unknown])
    assert not result.ok
    assert result.problem is not None
    assert "cannot verify /run/ckpt/ckpt_300.pt (could not be verified: validator crashed" in result.problem
    older_unknown = Candidate(generic(50).ckpt, Status.UNKNOWN, "timed out")
    assert plan(GENERIC, [generic(100), older_unknown]).ok, "one the trainer would not pick is no obstacle"


@given(
    files=st.dictionaries(st.tuples(st.sampled_from("GD"), st.integers(1, 9)), st.sampled_from(list(Status)))
)
def test_only_files_it_could_not_judge_or_still_being_written_can_block_a_plan(
    files: dict[tuple[str, int], Status],
) -> None:
    candidates = [paired(role, step * 100, status) for (role, step), status in files.items()]
    result = plan(PAIRED, candidates)
    unknown = {c.ckpt.path for c in candidates if c.status in (Status.UNKNOWN, Status.WRITING)}
    assert {m.path for m in result.blocked} <= unknown
    if not unknown:
        assert result.ok, result.summary()
    assert result.ok == (not result.blocked)


def test_of_two_verified_files_at_one_step_the_one_the_trainer_prefers_is_the_target() -> None:
    latest = generic(30, name="last.pt")  # its content says step 30 too
    numbered = generic(30)
    for order in ([latest, numbered], [numbered, latest]):
        result = plan(GENERIC, order)
        assert result.ok
        assert result.target == {"model": D / "last.pt"}, "the trainer resumes from last.pt first"
        assert result.moves == []


# --- the VITS family layout: digit sort over the full path, sentinels, epochs -----------

VITS_LIKE = GlobLayout(roles=("G", "D"), required_keys=("model",))
SENTINEL_LIKE = GlobLayout(
    roles=("G", "D"), required_keys=("model",), sentinel=2333333, steps_from_epochs=True
)


def glob_file(layout: GlobLayout, path: Path, content_step: int | None = None) -> Candidate:
    ckpt = layout.parse(path)
    assert ckpt is not None
    return Candidate(with_content_step(ckpt, content_step), Status.OK)


def test_a_name_the_trainers_sort_chokes_on_is_moved_aside() -> None:
    digitless = Path("/run/logs/voice")
    files = [glob_file(VITS_LIKE, digitless / n) for n in ("G_100.pth", "D_100.pth", "G_best.pth")]
    result = plan(VITS_LIKE, files)
    assert result.ok, result.problem
    assert [(m.path.name, m.reason.split(":")[0]) for m in result.moves] == [
        ("G_best.pth", "the trainer's resume rule fails on it")
    ]
    assert {r: p.name for r, p in result.lands_on.items()} == {"G": "G_100.pth", "D": "D_100.pth"}


def test_with_digits_in_the_directory_the_same_name_just_sorts_lowest() -> None:
    digits = Path("/run/logs/voice2")
    files = [glob_file(VITS_LIKE, digits / n) for n in ("G_100.pth", "D_100.pth", "G_best.pth")]
    result = plan(VITS_LIKE, files)
    assert result.ok
    assert result.moves == []


def test_layouts_counting_epochs_take_the_step_from_the_content() -> None:
    d = Path("/run/logs/voice")
    # A sentinel pair left from an older "save only latest" setting (epoch 3), and the
    # numbered pair saved since (epoch 8): the trainer would load the sentinel.
    files = [
        glob_file(SENTINEL_LIKE, d / "G_2333333.pth", 3),
        glob_file(SENTINEL_LIKE, d / "D_2333333.pth", 3),
        glob_file(SENTINEL_LIKE, d / "G_880.pth", 8),
        glob_file(SENTINEL_LIKE, d / "D_880.pth", 8),
    ]
    result = plan(SENTINEL_LIKE, files)
    assert result.ok
    assert result.target_step == 8
    assert sorted(m.path.name for m in result.moves) == ["D_2333333.pth", "G_2333333.pth"]
    # The other way round, the newer sentinel wins on its own.
    newer = [
        glob_file(SENTINEL_LIKE, d / "G_2333333.pth", 9),
        glob_file(SENTINEL_LIKE, d / "D_2333333.pth", 9),
        *files[2:],
    ]
    assert plan(SENTINEL_LIKE, newer).moves == []


def test_an_unverified_content_step_file_is_never_a_target() -> None:
    d = Path("/run/logs/voice")
    ckpt = SENTINEL_LIKE.parse(d / "G_880.pth")
    assert ckpt is not None
    assert ckpt.step is None
    assert ckpt.content_step
    result = plan(SENTINEL_LIKE, [Candidate(ckpt, Status.UNVERIFIED)])
    assert result.target_step is None


def test_verified_files_that_make_no_complete_state_are_left_to_the_trainer() -> None:
    # A G-only directory (a LoRA run) read with a G+D layout: nothing is moved into a
    # fresh start; the trainer starts as it would alone.
    result = plan(PAIRED, [paired("G", 100), paired("G", 200), paired("D", 50, Status.REJECTED)])
    assert result.ok, result.problem
    assert result.target_step is None
    assert [m.path.name for m in result.moves] == ["D_50.pth"], "damage is still moved aside"
    assert sorted(p.name for p in result.left_to_trainer) == ["G_100.pth", "G_200.pth"]
    assert result.summary().startswith("no complete verified state: the trainer starts as it would alone")
    # Intact files that lack keys a resume needs (released or EMA-only weights) too.
    partial = Candidate(PAIRED.parse(D / "G_300.pth"), Status.REJECTED, "missing key: optimizer")  # type: ignore[arg-type]
    assert plan(PAIRED, [partial]).moves == []
    # After the loss went NaN at step 150, moving the later files aside is the point.
    rolled_back = plan(PAIRED, [paired("G", 200), paired("D", 200)], below_step=150)
    assert rolled_back.ok
    assert rolled_back.target_step is None
    assert len(rolled_back.moves) == 2


def test_a_rule_failure_on_a_file_that_cannot_be_moved_refuses_the_plan() -> None:
    digitless = Path("/run/logs/voice")
    target = [glob_file(VITS_LIKE, digitless / n) for n in ("G_100.pth", "D_100.pth")]
    # A verified copy restored under a digit-less name would make the trainer's sort fail;
    # the planner cannot move what it is about to restore: it must refuse, not loop.
    snapshot = Snapshot("G", 200, digitless / "G_best.pth", STORE / "200/G_best.pth")
    snapshot_d = Snapshot("D", 200, digitless / "D_200.pth", STORE / "200/D_200.pth")
    result = plan(VITS_LIKE, target, [snapshot, snapshot_d])
    assert not result.ok
    assert result.lands_on == {}
