"""What moves each step besides the weights: every scheduled learning rate (:class:`LRSchedules`)
and every ramped hyper-parameter (:class:`Ramps`: penalty weights, betas, weight decay), set
for the coming step from the formulas of :mod:`ganforge.recipe.schedule` and
:mod:`ganforge.recipe.ramps`: Python floats on the eager step, device tensors updated in place
on the graph step."""
from __future__ import annotations

from typing import Any

import torch

from ganforge.errors import ConfigError
from ganforge.recipe.ramps import is_ramped, ramp_value
from ganforge.recipe.schedule import factor
from ganforge.recipe.types import Ramp, Schedule

__all__ = ["LRSchedules", "Ramps"]


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


class Ramps:
    """Sets every ramped hyper-parameter for the coming step: optimizers' ``betas`` and
    ``weight_decay`` (eager only) and each penalty's weight (times its ``every``), which
    :meth:`weight` returns: a Python float on the eager step, a device tensor on the graph
    step (computed in float64 on the CPU, like the learning rate, so both steps multiply by
    the same float32)."""

    def __init__(self, opts: dict[str, torch.optim.Optimizer], settings: dict[str, dict[str, Any]],
                 penalties: list, steps: int, *, device: torch.device, graph: bool):
        self.steps, self.graph = steps, graph
        self.groups = [(group, key, value) for name, opt in opts.items()
                       for key, value in settings.get(name, {}).items() if is_ramped(value)
                       for group in opt.param_groups]
        if graph and self.groups:  # (capture.reasons_against keeps such a run on the eager step)
            raise ConfigError("ramped betas or weight decay run on the eager step only")
        dtype = torch.float32 if device.type == "cuda" else torch.float64
        self.weights: dict[int, Any] = {}
        self.ramped: list[tuple[Any, torch.Tensor | None, torch.Tensor | None]] = []
        for p, _ in penalties:
            if isinstance(p.weight, Ramp):
                wide = torch.zeros((), dtype=dtype, device=device) if graph else None
                narrow = torch.zeros((), device=device) if graph else None
                self.weights[id(p)] = narrow
                self.ramped.append((p, wide, narrow))
            else:
                self.weights[id(p)] = p.weight * p.every

    def apply(self, step: int, step_t: torch.Tensor) -> None:
        """Values for step ``step`` (eager) or the device counter ``step_t`` (graph)."""
        for group, key, value in self.groups:
            if isinstance(value, Ramp):
                group[key] = ramp_value(value, float(step), self.steps)
            else:
                group[key] = tuple(ramp_value(v, float(step), self.steps) if isinstance(v, Ramp) else v
                                   for v in value)
        for p, wide, narrow in self.ramped:
            if wide is not None:
                wide.copy_(ramp_value(p.weight, step_t.to(wide.dtype), self.steps) * p.every)
                narrow.copy_(wide)
            else:
                self.weights[id(p)] = ramp_value(p.weight, float(step), self.steps) * p.every

    def weight(self, p: Any) -> Any:
        """Penalty ``p``'s weight times its ``every`` for this step."""
        return self.weights[id(p)]
