"""Exponential moving averages of the networks a system averages (``train.ema``).

After every good step each EMA copy's parameters move toward the network's,
``ema = lerp(ema, net, 1 - decay)``; before ``train.ema_start`` (and at the first update)
they are copied. Buffers (BatchNorm's running statistics, its counter) are **copied** from the
network, not averaged, as StyleGAN2-ADA does: the running statistics already are averages, of
the activations the network itself produces, and an average of them would describe activations
of weights the EMA copy does not have.

``train.ema_rampup`` (StyleGAN2-ADA's ``ema_rampup``, 0.05 there; 0 = off) caps the average's
half-life, counted in images, at that fraction of the images trained on so far, so that the
early average is not dominated by the random initial weights:
``decay = 0.5 ** (images_per_step / min(half_life, images_so_far * ema_rampup))``, where
``half_life`` is the one ``train.ema`` gives: ``images_per_step * log(0.5) / log(ema)``.

One implementation for both steps: the decay is a function of the step (:func:`decay`, a
Python float for the eager step, a device tensor for the graph step); a skipped (non-finite)
step leaves the copies as they were, decided in Python when the eager step already knows, or
on the device with ``torch.where`` when it does not (fused Adam's deferred skips, the graph).
"""
from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["EMAUpdater", "decay"]


def decay(ema: float, rampup: float, step: Any, images_per_step: int) -> Any:
    """The EMA decay for the update after step ``step`` (0-based; a float or a float tensor)."""
    if not rampup:
        return ema
    half_life = images_per_step * math.log(0.5) / math.log(ema)
    seen = step * images_per_step * rampup + 1e-8
    cap = seen.clamp_max(half_life) if torch.is_tensor(seen) else min(seen, half_life)
    return 0.5 ** (images_per_step / cap)


class EMAUpdater:
    """Updates ``state.emas`` after each step (see the module docstring)."""

    def __init__(self, state: Any, plain: dict[str, torch.nn.Module], *, deferred: bool, images_per_step: int):
        self.state, self.deferred, self.images = state, deferred, images_per_step
        self.dtype = torch.float32 if state.accelerator.device.type == "cuda" else torch.float64
        self.pairs = {}
        # eager: whether each average has begun (read once, here, after any resume: no read per step)
        self.started = {name: int(ema.n_averaged) > 0 for name, ema in state.emas.items()}
        for name, ema in state.emas.items():
            if deferred:
                ema.n_averaged = ema.n_averaged.to(state.accelerator.device)  # AveragedModel keeps it on the CPU
            params = list(zip(ema.module.parameters(), plain[name].parameters(), strict=True))
            buffers = list(zip(ema.module.buffers(), plain[name].buffers(), strict=True))
            self.pairs[name] = ([e.detach() for e, _ in params], [m.detach() for _, m in params],
                                [(e.detach(), m.detach()) for e, m in buffers])

    @torch.no_grad()
    def __call__(self, nonfinite: torch.Tensor, step_t: torch.Tensor) -> None:
        t = self.state.config.train
        for name, ema in self.state.emas.items():
            e_params, m_params, buffers = self.pairs[name]
            if not self.deferred:  # the eager step skipped a non-finite step before getting here
                if self.state.step < t.ema_start or not self.started[name]:
                    torch._foreach_copy_(e_params, m_params)
                else:
                    torch._foreach_lerp_(e_params, m_params, 1 - decay(t.ema, t.ema_rampup, self.state.step, self.images))
                if buffers:
                    torch._foreach_copy_([e for e, _ in buffers], [m for _, m in buffers])
                if self.state.step >= t.ema_start:
                    self.started[name] = True
                    ema.n_averaged += 1
                continue
            before_start = step_t < t.ema_start
            copy = before_start | (ema.n_averaged == 0)
            weight = 1 - decay(t.ema, t.ema_rampup, step_t.to(self.dtype), self.images)
            if torch.is_tensor(weight):  # computed as the eager step does (CPU: in float64), used in fp32
                weight = weight.float()
            lerped = torch._foreach_lerp(e_params, m_params, weight)
            for e, m, new in zip(e_params, m_params, lerped, strict=True):
                e.copy_(torch.where(nonfinite, e, torch.where(copy, m, new)))
            for e, m in buffers:
                e.copy_(torch.where(nonfinite, e, m))
            ema.n_averaged.add_((~nonfinite & ~before_start).to(ema.n_averaged.dtype))
