"""Ramps: hyper-parameters besides the learning rate that move over training (R3GAN's schedules).

A recipe may give a penalty's ``weight``, an entry of an optimizer's ``betas`` or its
``weight_decay`` as a ramp instead of a number::

    penalties:
      - {name: r1, weight: {initial: 0.05, final: 0.005}}        # cosine over the whole run
      - {name: r2, weight: {initial: 0.05, final: 0.005}}
    optim: {betas: [0.0, {initial: 0.9, final: 0.99}]}           # beta2 0.9 -> 0.99 (R3GAN)

The value goes from ``initial`` to ``final`` between steps ``start`` and ``stop`` (each a step or a
fraction of ``train.steps``; ``stop`` unset: ``train.steps``) along a half cosine or a line, and
is constant outside. Like the learning-rate schedule it is a function of the step alone, so a
resumed run continues it exactly. A ramped penalty weight is a device tensor on the fast path,
updated in place inside the CUDA graph (:class:`ganforge.training.schedules.Ramps`). Ramped betas and weight decay are read by fused Adam on
the host, so a run that ramps them takes the eager step (``capture.reasons_against`` says so).
"""
from __future__ import annotations

import math
from typing import Any

import torch

from ganforge.errors import ConfigError
from ganforge.recipe.schedule import schedule_step
from ganforge.recipe.types import Ramp

__all__ = ["RAMPS", "initial", "is_ramped", "ramp_value", "validate_ramp"]

RAMPS = ("cosine", "linear")


def initial(value: Any) -> Any:
    """A hyper-parameter's value at step 0: a number, or a ramp's ``initial``."""
    return value.initial if isinstance(value, Ramp) else value


def is_ramped(value: Any) -> bool:
    """A ramp, or a sequence (betas) holding one."""
    return isinstance(value, Ramp) or isinstance(value, (list, tuple)) and any(isinstance(v, Ramp) for v in value)


def _bounds(r: Ramp, steps: int) -> tuple[int, int]:
    return schedule_step(r.start, steps), steps if r.stop is None else schedule_step(r.stop, steps)


def ramp_value(r: Ramp, step: Any, steps: int) -> Any:
    """The ramp's value at ``step`` of a run of ``steps`` generator steps: one formula, on a
    Python float (eager step, no tensor read) or on a float tensor (graph step, on the device)."""
    start, stop = _bounds(r, steps)
    t = torch.is_tensor(step)
    done = (step - start) / (stop - start)
    done = done.clamp(0.0, 1.0) if t else min(max(done, 0.0), 1.0)
    if r.type == "cosine":
        done = 0.5 * (1.0 - (torch.cos if t else math.cos)(math.pi * done))
    return r.initial + (r.final - r.initial) * done


def validate_ramp(r: Ramp, where: str, steps: int, low: float, high: float, what: str) -> None:
    """A ramp's type, its ends inside [low, high) (``what`` says the range) and its steps."""
    if r.type not in RAMPS:
        raise ConfigError(f"{where}.type: unknown ramp '{r.type}'; known: {', '.join(RAMPS)}")
    for key in ("initial", "final"):
        v = getattr(r, key)
        if not (math.isfinite(v) and low <= v < high):
            raise ConfigError(f"{where}.{key} must be {what}, got {v}")
    for key in ("start", "stop"):
        v = getattr(r, key)
        if key == "stop" and v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (
                0 <= v <= 1 if isinstance(v, float) else 0 <= v <= steps):
            raise ConfigError(f"{where}.{key} is a step from 0 to train.steps ({steps}) or a fraction of "
                              f"train.steps in [0, 1] (0.5: half-way); got {v!r}")
    start, stop = _bounds(r, steps)
    if stop <= start:
        raise ConfigError(f"{where}: the ramp stops at step {stop}, not after it starts (step {start}); "
                          f"set stop after start, or give a number instead of a ramp")
