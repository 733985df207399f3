"""Regularisers added to a phase's loss, usable with any loss.

The engine adds ``weight * every * penalty(net, real, fake)`` to the loss of a phase that
penalises the network (``Phase.penalize``) every ``every`` runs of that phase (lazy
regularisation, Karras et al. 2020) and computes it in fp32. ``real`` and ``fake`` are what the
network was given (``Terms.judged``): a tensor, or a tuple of tensors for a network of several
inputs (a pair discriminator D(x, z) is penalised on both). A penalty applies to discriminators
unless it says ``network_kind = "generator"`` (path length). A penalty with
``capturable = True`` is tensor code only and may be captured in a CUDA graph. Gradients with
respect to the inputs come from ``torch.autograd.grad(..., create_graph=True)`` followed by one
backward through the (DDP-wrapped) model, which gives correctly averaged gradients under DDP.
"""
from __future__ import annotations

import torch
from torch import nn

from ganforge import hookimpl
from ganforge.system import logit_sum

__all__ = ["GradientPenalty", "PathLength", "R1", "R2"]


def _inputs(x: torch.Tensor | tuple) -> tuple[torch.Tensor, ...]:
    return x if isinstance(x, tuple) else (x,)


def _input_grad(D: nn.Module, x: torch.Tensor | tuple) -> torch.Tensor:
    """d(sum of D's logits)/d(inputs), every input's flattened and side by side: (N, dims)."""
    xs = tuple(t.detach().float().requires_grad_(True) for t in _inputs(x))
    grads = torch.autograd.grad(logit_sum(D(*xs)), xs, create_graph=True)  # (every head's logits)
    return torch.cat([g.flatten(1) for g in grads], 1)


class R1:
    """R1 penalty (Mescheder et al. 2018): 0.5 * E ||grad_x D(x)||^2 on real data."""

    capturable = True  # tensor code only (see ganforge.training.step)

    def __call__(self, D: nn.Module, real, fake) -> torch.Tensor:
        return 0.5 * _input_grad(D, real).pow(2).sum(1).mean()


class R2:
    """R2 penalty (Mescheder et al. 2018; with R1 the regulariser of R3GAN, Huang et al. 2024):
    0.5 * E ||grad_x D(x)||^2 on generated samples (detached: it trains D only)."""

    capturable = True  # tensor code only (see ganforge.training.step)

    def __call__(self, D: nn.Module, real, fake) -> torch.Tensor:
        return 0.5 * _input_grad(D, fake).pow(2).sum(1).mean()


class GradientPenalty:
    """WGAN-GP gradient penalty (Gulrajani et al. 2017): E (||grad D(x_hat)|| - 1)^2 on
    random interpolates of real and fake samples."""

    capturable = True  # tensor code only (see ganforge.training.step)

    def __init__(self, target: float = 1.0):
        self.target = target

    def __call__(self, D: nn.Module, real, fake) -> torch.Tensor:
        reals, fakes = _inputs(real), _inputs(fake)
        eps = torch.rand((reals[0].shape[0],), device=reals[0].device)  # one mix per sample, for every input
        x_hat = tuple(eps.view(-1, *[1] * (r.dim() - 1)) * r.detach().float()
                      + (1.0 - eps.view(-1, *[1] * (r.dim() - 1))) * f.detach().float() for r, f in zip(reals, fakes, strict=True))
        norm = _input_grad(D, x_hat).norm(2, dim=1)
        return ((norm - self.target) ** 2).mean()


class PathLength:
    """StyleGAN2's path-length regulariser (Karras et al. 2020) on a generator: with
    y ~ N(0, I) / sqrt(pixels), the length of J^T y (J: the Jacobian of G at its input z)
    should stay at its running mean a: E (|J^T y| - a)^2, a an exponential average of the
    lengths (``decay`` 0.01, checkpointed). On half the batch (``shrink`` 2), as StyleGAN2.
    Differentiated with respect to G's input (``Terms.judged[G].fake``: ``(z,)`` for the classic
    systems); the ``stylegan2`` system reports w (N, num_ws, w_dim) with the synthesis network as
    ``forward``, so the length is StyleGAN2's: per layer, averaged over the layers."""

    capturable = True
    network_kind = "generator"

    def __init__(self, decay: float = 0.01, shrink: int = 2):
        if not 0 < decay <= 1 or shrink < 1:
            raise ValueError(f"path_length: decay in (0, 1] and shrink >= 1, got {decay} and {shrink}")
        self.decay, self.shrink = decay, shrink
        self.mean = torch.zeros(())

    def __call__(self, G: nn.Module, real, fake) -> torch.Tensor:
        z = _inputs(fake)[0]
        z = z[: max(1, z.shape[0] // self.shrink)]
        if not z.requires_grad:  # z, a leaf; a system's w (stylegan2) keeps its graph, so that the
            z = z.detach().float().requires_grad_(True)  # penalty also trains the mapping, as StyleGAN2's
        out = G(z).float()
        pixels = out[0].numel() // out.shape[1] if out.dim() == 4 else out[0].numel()  # (images: H x W)
        y = torch.randn_like(out) / pixels ** 0.5
        (grad,) = torch.autograd.grad((out * y).sum(), z, create_graph=True)
        # w broadcast to the layers (N, num_ws, w_dim): the squared norm per layer, averaged over
        # the layers, as StyleGAN2 (pl_grads.square().sum(2).mean(1).sqrt()); else over everything
        lengths = grad.square().sum(2).mean(1).sqrt() if grad.dim() == 3 else grad.flatten(1).square().sum(1).sqrt()
        if self.mean.device != lengths.device:
            self.mean = self.mean.to(lengths.device)
        mean = self.mean.lerp(lengths.mean(), self.decay)  # (with its gradient in the penalty, as StyleGAN2's)
        self.mean.copy_(mean.detach())  # (in place: a captured step holds it)
        return (lengths - mean).square().mean()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean}

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        self.mean.copy_(tensors["mean"])


@hookimpl
def ganforge_register_penalties(register):
    register("r1", R1)
    register("r2", R2)
    register("path_length", PathLength)
    register("gp", GradientPenalty)
