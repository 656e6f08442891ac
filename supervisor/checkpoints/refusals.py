"""Why a plan the trainer's rule agrees with must still not be carried out: a fresh start that would lose a complete verified state, or a target the trainer's weights-only load refuses. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from supervisor.checkpoints.plan import Plan


def fresh_start_refusal(the_plan: Plan, newest_complete: int | None, below_step: int | None) -> str | None:
    """Why the plan must not be carried out although the trainer's rule agrees with it:
    it moves files aside and leaves nothing to resume from, while a complete verified
    state existed (a G without its D never was one). The trainer starting from scratch
    would lose that state, on our judgement alone. A NaN rollback moving everything
    after the bound is the exception."""
    if the_plan.target_step is not None or not the_plan.moves or below_step is not None:
        return None
    if newest_complete is None:
        return None
    return (
        f"a complete verified state existed (at {newest_complete}, in the adapter's steps or epochs), but "
        "none is left to resume from (see 'train-supervisor plan' and state_dir/quarantine); refusing to "
        "let the trainer start from scratch"
    )


def globals_refusal(
    needs: Sequence[str], weights_only: bool | None, versions: Mapping[str, str | None]
) -> str | None:
    """Why the trainer cannot load its target: the target holds these globals (beyond
    torch's own safe ones) and the trainer's torch.load is weights-only. Where that cannot
    be told, the plan stands (the trainer's own error line then says it)."""
    if not needs or not weights_only:
        return None
    installed = ", ".join(f"{name} {version}" for name, version in versions.items() if version)
    names = ", ".join(needs)
    return (
        f"the trainer loads checkpoints weights-only ({installed}) and the state to resume from holds "
        f"{names}, which it would refuse: every resume would fail. Set [checkpoints] trainer_safe_globals "
        f"= true (the supervisor allows exactly {names} inside the trainer's process; the trainer stays "
        "unmodified), or install a Lightning before 2.6"
    )
