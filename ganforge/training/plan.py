"""The plan of one training step, as data: which of the system's phases run in it
(``Phase.start``/``stop``) and, for each run of each phase, which of its penalties are due (lazy
regularisation: ``every``). A plan is built outside the step from the step counter and each
phase's run count, read by the step function (:mod:`ganforge.training.step_function`), and is the
key of the step's CUDA graph on the fast path (one graph per plan). Plans are frozen and hashable.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["PenaltyTarget", "PhasePlan", "StepPlan", "plan_step"]


@dataclass(frozen=True, eq=False)
class PenaltyTarget:
    """A penalty of a phase: its recipe entry, the penalty function and the discriminators it
    applies to in that phase (compared by identity, like the recipe entry)."""

    penalty: Any  # ganforge.recipe.types.Penalty
    fn: Any
    nets: tuple[str, ...]


@dataclass(frozen=True)
class PhasePlan:
    """One phase in one step: whether it runs, and for each of its ``repeats`` runs which of
    its penalty targets are due (in the order of the phase's targets)."""

    runs: bool
    due: tuple[tuple[bool, ...], ...]


@dataclass(frozen=True)
class StepPlan:
    """Every phase's plan, in the system's phase order."""

    phases: tuple[PhasePlan, ...]

    @property
    def running(self) -> tuple[bool, ...]:
        return tuple(p.runs for p in self.phases)


def plan_step(phases: list, targets: list[list[PenaltyTarget]], phase_steps: dict[str, int], step: int) -> StepPlan:
    """The plan of generator step ``step`` (0-based, the next to run): a phase runs when
    ``Phase.runs_at(step)``; in its ``r``-th run of this step a penalty is due when the phase's
    run count (``phase_steps``, runs before this step) plus ``r + 1`` is a multiple of its
    ``every``. A phase that does not run has no penalty due."""
    plans = []
    for phase, phase_targets in zip(phases, targets, strict=True):
        runs = phase.runs_at(step)
        done = phase_steps.get(phase.name, 0)
        due = tuple(tuple(runs and (done + r + 1) % t.penalty.every == 0 for t in phase_targets)
                    for r in range(phase.repeats))
        plans.append(PhasePlan(runs, due))
    return StepPlan(tuple(plans))
