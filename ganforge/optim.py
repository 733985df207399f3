"""Optimizers, learning-rate schedules and gradient clipping, per declared optimizer.

A system declares its optimizers (:class:`ganforge.system.Optimizer`: networks, lr, betas,
weight decay). A recipe chooses, for all of them (``optim.type``, ``optim.args``,
``optim.schedule``, ``optim.clip``) or for one by name (``optimizers.D: {type: adamw, ...}``):

- **type**: any ``torch.optim`` optimizer by name (``adam`` by default, ``adamw``, ``sgd``,
  ``rmsprop``, ...), with ``args`` for its other arguments; ``betas`` and ``weight_decay`` go to
  the types that take them. The fused kernel is used where the type has one (``optim.fused``).
- **schedule**: a multiplier of the base rate that is a function of the step alone
  (:func:`factor`), written once: the eager step evaluates it on Python floats, the CUDA-graph
  step on a device tensor in place. ``constant``, ``linear`` (today's
  ``optim.lr_decay``), ``cosine`` and ``exponential`` (per step or per data epoch), each after
  an optional linear ``warmup``.
- **betas**, **weight_decay** (and penalty weights) may be ramps (:mod:`ganforge.ramps`).
- **clip**: the L2 norm of the optimizer's gradients is clipped to this value before its step
  (after fp16's unscale and DDP's all-reduce) and logged as ``grad_norm_<name>``.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ganforge.config import Recipe, Schedule
from ganforge.errors import ConfigError
from ganforge.ramps import initial, is_ramped

__all__ = ["LRSchedules", "OptimizerChoice", "choices", "factor", "make_optimizers", "optimizer_types",
           "resolve_type", "schedule_step", "validate_schedule"]

SCHEDULES = ("constant", "linear", "cosine", "exponential")
UNSUITABLE = {"lbfgs": "needs a closure that re-evaluates the loss, which an adversarial phase is not"}


def optimizer_types() -> dict[str, type[torch.optim.Optimizer]]:
    """Every optimizer class in ``torch.optim``, by lower-case name."""
    return {n.lower(): c for n, c in vars(torch.optim).items()
            if isinstance(c, type) and issubclass(c, torch.optim.Optimizer) and c is not torch.optim.Optimizer}


@dataclass
class OptimizerChoice:
    """What a recipe makes of one declared optimizer."""

    cls: type[torch.optim.Optimizer]
    kwargs: dict[str, Any]  # lr, betas, weight_decay where the type takes them, and args
    schedule: Schedule | None
    clip: float | None
    ramps: dict[str, Any]  # betas / weight_decay given with a ramp (ganforge.ramps): their recipe values


def resolve_type(name: str, where: str) -> type[torch.optim.Optimizer]:
    known = optimizer_types()
    cls = known.get(str(name).lower())
    if cls is None:
        raise ConfigError(f"{where}.type: unknown optimizer '{name}'; torch.optim has "
                          f"{', '.join(sorted(k for k in known if k not in UNSUITABLE))}")
    if cls.__name__.lower() in UNSUITABLE:
        raise ConfigError(f"{where}.type: {cls.__name__} {UNSUITABLE[cls.__name__.lower()]}; "
                          f"choose adam, adamw or sgd")
    return cls


def choices(recipe: Recipe, system: Any) -> dict[str, OptimizerChoice]:
    """Each declared optimizer's type, arguments, schedule and clip: ``optimizers.<name>`` over
    ``optim`` over the system's values. An unknown type or argument is one clear error."""
    out = {}
    for name, spec in system.optimizers.items():
        o = recipe.optimizers.get(name)
        where = f"optimizers.{name}" if o is not None and o.type is not None else "optim"
        cls = resolve_type(o.type if o is not None and o.type is not None else recipe.optim.type, where)
        accepted = inspect.signature(cls).parameters
        own_type = o is not None and o.type is not None and o.type.lower() != recipe.optim.type.lower()
        extra = dict(o.args) if o is not None and o.args is not None else ({} if own_type else dict(recipe.optim.args))
        kwargs: dict[str, Any] = {"lr": o.lr if o is not None and o.lr is not None else spec.lr}
        ramps: dict[str, Any] = {}
        for key, value in (("betas", o.betas if o is not None and o.betas is not None else spec.betas),
                           ("weight_decay", o.weight_decay if o is not None and o.weight_decay is not None
                            else spec.weight_decay)):
            explicit = o is not None and getattr(o, key) is not None
            if key in accepted:  # (a ramp starts at its initial value; ganforge.ramps moves it)
                kwargs[key] = tuple(initial(v) for v in value) if key == "betas" else initial(value)
                if is_ramped(value):
                    ramps[key] = value
            elif explicit:
                raise ConfigError(f"optimizers.{name}.{key}: {cls.__name__} takes no {key}; its arguments "
                                  f"are {', '.join(p for p in accepted if p != 'params')}")
        bad = sorted(set(extra) - set(accepted) | set(extra) & {"params", "fused", "capturable", "lr"})
        if bad:
            source = f"optimizers.{name}.args" if o is not None and o.args is not None else "optim.args"
            raise ConfigError(f"{source}: {cls.__name__} does not take {', '.join(bad)} here; its arguments are "
                              f"{', '.join(p for p in accepted if p not in ('params', 'fused', 'capturable'))} "
                              f"(lr, fused and capturable are set by their own keys)")
        kwargs.update(extra)
        schedule = o.schedule if o is not None and o.schedule is not None else recipe.optim.schedule
        if schedule is None and recipe.optim.lr_decay == "linear":
            schedule = Schedule("linear", start=recipe.optim.lr_decay_start)
        clip = o.clip if o is not None and o.clip is not None else recipe.optim.clip
        out[name] = OptimizerChoice(cls, kwargs, schedule, clip, ramps)
    return out


def make_optimizers(recipe: Recipe, system: Any, nets: dict[str, nn.Module], *,
                    fused: bool, capturable: bool) -> dict[str, torch.optim.Optimizer]:
    """One optimizer per declared optimizer, over its networks' parameters. ``fused``: the
    fused kernel where the type has one; ``capturable``: the CUDA-graph step's (Adam, AdamW)."""
    out = {}
    for name, choice in choices(recipe, system).items():
        params = [p for n in system.optimizers[name].networks for p in nets[n].parameters()]
        accepted = inspect.signature(choice.cls).parameters
        flags = {}
        if fused and "fused" in accepted:
            flags["fused"] = True
        if capturable:
            flags["capturable"] = True
        try:
            out[name] = choice.cls(params, **choice.kwargs, **flags)
        except (ValueError, TypeError, RuntimeError) as err:
            raise ConfigError(f"optimizer '{name}' ({choice.cls.__name__}): {err}") from None
    return out


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


class LRSchedules:
    """Sets every scheduled optimizer's learning rate for the coming step. Eager: a Python
    float (no tensor read). Graph: each param group's ``lr`` is a
    device tensor updated in place from the device step counter, so capture keeps it live."""

    def __init__(self, opts: dict[str, torch.optim.Optimizer], base_lrs: dict[str, list[float]],
                 schedules: dict[str, Schedule | None], steps: int, *, device: torch.device, graph: bool,
                 steps_per_epoch: float | None):
        self.steps, self.graph, self.steps_per_epoch = steps, graph, steps_per_epoch
        dtype = torch.float32 if device.type == "cuda" else torch.float64  # CPU: exact
        self.groups: list[tuple[dict, torch.Tensor | None, float, Schedule]] = []
        for name, opt in opts.items():
            schedule = schedules.get(name)
            if schedule is None or schedule.type == "constant" and not schedule.warmup:
                continue
            for group, base in zip(opt.param_groups, base_lrs[name], strict=True):
                tensor = torch.tensor(base, dtype=dtype, device=device) if graph else None
                if graph:
                    group["lr"] = tensor
                self.groups.append((group, tensor, base, schedule))

    def apply(self, step: int, step_t: torch.Tensor) -> None:
        """Learning rates for step ``step`` (eager) or the device counter ``step_t`` (graph)."""
        for group, tensor, base, schedule in self.groups:
            if tensor is not None:
                tensor.copy_(base * factor(schedule, step_t.to(tensor.dtype), self.steps, self.steps_per_epoch))
            else:
                group["lr"] = base * factor(schedule, float(step), self.steps, self.steps_per_epoch)
