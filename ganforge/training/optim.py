"""Optimizers, learning-rate schedules and gradient clipping, per declared optimizer.

A system declares its optimizers (:class:`ganforge.contract.system.Optimizer`: networks, lr, betas,
weight decay). A recipe chooses, for all of them (``optim.type``, ``optim.args``,
``optim.schedule``, ``optim.clip``) or for one by name (``optimizers.D: {type: adamw, ...}``):

- **type**: any ``torch.optim`` optimizer by name (``adam`` by default, ``adamw``, ``sgd``,
  ``rmsprop``, ...), with ``args`` for its other arguments; ``betas`` and ``weight_decay`` go to
  the types that take them. The fused kernel is used where the type has one (``optim.fused``).
- **schedule**: a multiplier of the base rate that is a function of the step alone
  (:func:`ganforge.recipe.schedule.factor`), written once: the eager step evaluates it on Python floats, the CUDA-graph
  step on a device tensor in place. ``constant``, ``linear`` (today's
  ``optim.lr_decay``), ``cosine`` and ``exponential`` (per step or per data epoch), each after
  an optional linear ``warmup``.
- **betas**, **weight_decay** (and penalty weights) may be ramps (:mod:`ganforge.recipe.ramps`).
- **clip**: the L2 norm of the optimizer's gradients is clipped to this value before its step
  (after fp16's unscale and DDP's all-reduce) and logged as ``grad_norm_<name>``.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ganforge.errors import ConfigError
from ganforge.recipe.optimizers import resolve_type
from ganforge.recipe.ramps import initial, is_ramped
from ganforge.recipe.types import Recipe, Schedule

__all__ = ["OptimizerChoice", "choices", "make_optimizers", "skips_on_found_inf"]


@dataclass
class OptimizerChoice:
    """What a recipe makes of one declared optimizer."""

    cls: type[torch.optim.Optimizer]
    kwargs: dict[str, Any]  # lr, betas, weight_decay where the type takes them, and args
    schedule: Schedule | None
    clip: float | None
    ramps: dict[str, Any]  # betas / weight_decay given with a ramp (ganforge.recipe.ramps): their recipe values


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
            if key in accepted:  # (a ramp starts at its initial value; ganforge.training.schedules moves it)
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


def skips_on_found_inf(opt: torch.optim.Optimizer) -> bool:
    """Whether a step of this optimizer's type and settings leaves a parameter and its moments
    unchanged when ``found_inf`` is 1, as torch's fused Adam does today: the deferred
    non-finite skip (the graph step, and the eager step with fused Adam) relies on it, and it is
    an attribute torch happens to read, not a promise. Tried once on a copy at start-up."""
    group = opt.param_groups[0]
    param = group["params"][0]
    accepted = inspect.signature(type(opt)).parameters  # (a group holds keys its class does not take)
    options = {k: v for k, v in group.items() if k != "params" and k in accepted}
    if torch.is_tensor(options.get("lr")):
        options["lr"] = options["lr"].clone()
    probe = torch.zeros(4, device=param.device, dtype=param.dtype, requires_grad=True)
    probe.grad = torch.ones_like(probe)
    try:
        copy = type(opt)([probe], **options)
        copy.found_inf = torch.ones((), device=param.device)
        copy.step()
    except (AssertionError, RuntimeError, TypeError, ValueError):  # (foreach Adam refuses found_inf)
        return False
    return bool((probe == 0).all())
