"""Learning-rate schedules as formulas of the step alone: the multiplier of the base rate
(:func:`factor`), written once for the eager step (Python floats) and the graph step (a device
tensor, in place); steps given as fractions of ``train.steps``; and the checks of a schedule's
recipe values. Used by the recipe's validation, the ramps (:mod:`ganforge.recipe.ramps`) and
the optimizers (:mod:`ganforge.training.schedules`)."""
from __future__ import annotations

import math
from typing import Any

import torch

from ganforge.errors import ConfigError
from ganforge.recipe.types import Schedule

__all__ = ["SCHEDULES", "factor", "schedule_step", "validate_schedule"]

SCHEDULES = ("constant", "linear", "cosine", "exponential")


def validate_schedule(s: Schedule, where: str, steps: int) -> None:
    """A schedule's values: a known type; steps and fractions inside ``train.steps``."""
    if s.type not in SCHEDULES:
        raise ConfigError(f"{where}.type: unknown schedule '{s.type}'; known: {', '.join(SCHEDULES)}")
    for key in ("warmup", "start"):
        v = getattr(s, key)
        if (isinstance(v, bool) or not isinstance(v, (int, float))
                or not (0 <= v < 1 if isinstance(v, float) else 0 <= v < steps)
                or schedule_step(v, steps) >= steps):
            raise ConfigError(f"{where}.{key} is a step from 0 to train.steps - 1 ({steps - 1}) or a fraction "
                              f"of train.steps in [0, 1) (0.5: half-way); got {v!r}")
    if not (math.isfinite(s.final) and 0 <= s.final <= 1):
        raise ConfigError(f"{where}.final is the multiplier reached at train.steps, in [0, 1]; got {s.final}")
    if not (math.isfinite(s.gamma) and 0 < s.gamma <= 1):
        raise ConfigError(f"{where}.gamma is the exponential decay per {s.per}, in (0, 1]; got {s.gamma}")
    if s.per not in ("step", "epoch"):
        raise ConfigError(f"{where}.per: 'step' or 'epoch', got '{s.per}'")


def schedule_step(value: int | float, steps: int) -> int:
    """A step given as a step or as a fraction of ``train.steps``."""
    return round(value * steps) if isinstance(value, float) else value


def factor(s: Schedule, step: Any, steps: int, steps_per_epoch: float | None = None) -> Any:
    """The multiplier of the base learning rate at ``step`` of a run of ``steps`` generator
    steps. One formula for both steps: a Python float for the eager step (no tensor read), a
    float tensor for the graph step (evaluated on the device, in place, inside the graph)."""
    t = torch.is_tensor(step)
    lo = (lambda x, v: x.clamp_min(v)) if t else (lambda x, v: max(x, v))
    hi = (lambda x, v: x.clamp_max(v)) if t else (lambda x, v: min(x, v))
    warmup, start = schedule_step(s.warmup, steps), schedule_step(s.start, steps)
    if s.type == "linear":
        done = lo(step - start, 0) / (steps - start)
        f = s.final + (1.0 - s.final) * (1.0 - done) if s.final else 1.0 - done
    elif s.type == "cosine":
        begin = max(warmup, start)
        done = hi(lo((step - begin) / (steps - begin), 0), 1)
        f = s.final + (1.0 - s.final) * 0.5 * (1.0 + (torch.cos if t else math.cos)(math.pi * done))
    elif s.type == "exponential":
        floor = torch.floor if t else math.floor
        n = step if s.per == "step" else floor(step / steps_per_epoch)
        n0 = start if s.per == "step" else math.floor(start / steps_per_epoch)
        f = s.gamma ** lo(n - n0, 0)
    else:
        f = 1.0
    if warmup:
        f = f * hi(step / warmup, 1.0)
    return f
