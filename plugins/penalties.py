"""Discriminator regularisers, usable with any loss.

The engine adds ``weight * every * penalty(D, real, fake)`` to D's loss every ``every`` D steps
(lazy regularisation, Karras et al. 2020) and computes it in fp32. A penalty with
``capturable = True`` is tensor code only and may be captured in a CUDA graph. Gradients with respect to
the inputs come from ``torch.autograd.grad(..., create_graph=True)`` followed by one backward
through the (DDP-wrapped) model, which gives correctly averaged gradients under DDP.
"""
from __future__ import annotations

import torch
from torch import nn

from ganforge import hookimpl
from ganforge.system import logit_sum

__all__ = ["GradientPenalty", "R1", "R2"]


def _input_grad(D: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = x.detach().float().requires_grad_(True)
    (grad,) = torch.autograd.grad(logit_sum(D(x)), x, create_graph=True)  # (every head's logits)
    return grad.flatten(1)


class R1:
    """R1 penalty (Mescheder et al. 2018): 0.5 * E ||grad_x D(x)||^2 on real data."""

    capturable = True  # tensor code only (see ganforge.step)

    def __call__(self, D: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return 0.5 * _input_grad(D, real).pow(2).sum(1).mean()


class R2:
    """R2 penalty (Mescheder et al. 2018; with R1 the regulariser of R3GAN, Huang et al. 2024):
    0.5 * E ||grad_x D(x)||^2 on generated samples (detached: it trains D only)."""

    capturable = True  # tensor code only (see ganforge.step)

    def __call__(self, D: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return 0.5 * _input_grad(D, fake).pow(2).sum(1).mean()


class GradientPenalty:
    """WGAN-GP gradient penalty (Gulrajani et al. 2017): E (||grad D(x_hat)|| - 1)^2 on
    random interpolates of real and fake samples."""

    capturable = True  # tensor code only (see ganforge.step)

    def __init__(self, target: float = 1.0):
        self.target = target

    def __call__(self, D: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        real, fake = real.detach().float(), fake.detach().float()
        eps = torch.rand((real.shape[0],) + (1,) * (real.dim() - 1), device=real.device)
        x_hat = eps * real + (1.0 - eps) * fake
        norm = _input_grad(D, x_hat).norm(2, dim=1)
        return ((norm - self.target) ** 2).mean()


@hookimpl
def ganforge_register_penalties(register):
    register("r1", R1)
    register("r2", R2)
    register("gp", GradientPenalty)
