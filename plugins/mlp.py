"""Multilayer-perceptron generator, discriminator and encoder.

Class-conditional when the objective passes ``num_classes`` (``objective=conditional``): G's
``cond`` is ``cbn`` (class-conditional BatchNorm, needs ``batchnorm``) or ``concat`` (a one-hot
label appended to z); D's is ``projection`` (Miyato & Koyama 2018) or ``concat`` (a one-hot
label appended to the input). ``auto`` picks cbn (concat without BatchNorm) and projection.

The generator's defaults are the reference MNIST GAN's generator: 100 -> 256 -> 512 -> 1024 ->
784 with BatchNorm1d + ReLU after each hidden layer and tanh out, reshaped to 1x28x28. The same
modules with other widths serve vector data (the 2-D Gaussian mixtures), where the output is
left linear.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ganforge import hookimpl
from ganforge.layers import (ConditionalBatchNorm, check_condition, discriminator_forward, needs_labels, one_hot,
                             run_conditional)

__all__ = ["MLPDiscriminator", "MLPEncoder", "MLPGenerator"]


def _activation(name: str) -> nn.Module:
    acts = {"relu": nn.ReLU(), "leaky_relu": nn.LeakyReLU(0.2), "elu": nn.ELU(), "tanh": nn.Tanh()}
    if name not in acts:
        raise ValueError(f"activation must be one of {', '.join(acts)}, got '{name}'")
    return acts[name]


class MLPGenerator(nn.Module):
    def __init__(self, z_dim: int, out_shape: Sequence[int], hidden: Sequence[int],
                 batchnorm: bool, activation: str, out_activation: str, num_classes: int = 0,
                 cond: str = "none"):
        super().__init__()
        if cond == "cbn" and not batchnorm:
            raise ValueError("cond=cbn conditions the BatchNorm layers: set batchnorm: true, or cond: concat")
        self.out_shape, self.cond, self.num_classes = tuple(out_shape), cond, num_classes
        layers: list[nn.Module] = []
        width = z_dim + (num_classes if cond == "concat" else 0)
        for h in hidden:
            layers.append(nn.Linear(width, h))
            if batchnorm:
                layers.append(ConditionalBatchNorm(h, num_classes, dims=1) if cond == "cbn" else nn.BatchNorm1d(h))
            layers.append(_activation(activation))
            width = h
        layers.append(nn.Linear(width, math.prod(self.out_shape)))
        if out_activation != "none":
            layers.append(_activation(out_activation))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.cond == "none":
            return self.net(z).view(z.shape[0], *self.out_shape)
        needs_labels(self.cond, y, "generator")
        if self.cond == "concat":
            z = torch.cat([z, one_hot(y, self.num_classes, z.dtype)], 1)
        return run_conditional(self.net, z, y).view(z.shape[0], *self.out_shape)


class MLPDiscriminator(nn.Module):
    def __init__(self, in_shape: Sequence[int], hidden: Sequence[int], activation: str,
                 spectral_norm: bool, num_classes: int = 0, cond: str = "none", codes: int = 0):
        super().__init__()
        self.cond, self.num_classes = cond, num_classes
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(in_shape) + (num_classes if cond == "concat" else 0)
        wrap = nn.utils.parametrizations.spectral_norm if spectral_norm else (lambda m: m)
        for h in hidden:
            layers += [wrap(nn.Linear(width, h)), _activation(activation)]
            width = h
        layers.append(wrap(nn.Linear(width, 1)))
        self.net = nn.Sequential(*layers)
        self.q = wrap(nn.Linear(width, codes)) if codes > 0 else None  # InfoGAN code / AC-GAN class head
        if cond == "projection":
            embed = nn.Embedding(num_classes, width)
            nn.init.xavier_uniform_(embed.weight)
            self.embed = wrap(embed)  # spectral norm on the embedding when D uses it

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, codes: bool = False):
        """Logits; with ``codes=True``, ``(logits, code_logits)`` from the code/class head."""
        return discriminator_forward(self, x, y, codes, spatial=False)


class MLPEncoder(nn.Module):
    """Samples ``(N, *in_shape)`` -> codes ``(N, z_dim)`` (BiGAN's / ALI's encoder E)."""

    def __init__(self, in_shape: Sequence[int], z_dim: int, hidden: Sequence[int], activation: str):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(in_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), _activation(activation)]
            width = h
        layers.append(nn.Linear(width, z_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _check_hidden(hidden) -> None:
    if isinstance(hidden, (int, float)) or not all(isinstance(h, int) and h > 0 for h in hidden):
        raise ValueError(f"hidden is a list of layer widths, each >= 1 (e.g. [256, 256]), got {hidden}")


def mlp_generator(*, z_dim: int, out_shape: Sequence[int], hidden: Sequence[int] = (256, 512, 1024),
                  batchnorm: bool = True, activation: str = "relu",
                  out_activation: str = "auto", num_classes: int = 0, cond: str = "auto") -> MLPGenerator:
    """MLP generator (defaults: the reference MNIST GAN's G, tanh out for images); class-conditional
    (cond: cbn | concat) under a conditional objective."""
    _check_hidden(hidden)
    if out_activation == "auto":  # images live in [-1, 1]; vectors are unbounded
        out_activation = "tanh" if len(out_shape) == 3 else "none"
    if cond == "auto" and num_classes and not batchnorm:
        cond = "concat"
    cond = check_condition("generator", cond, num_classes)
    return MLPGenerator(z_dim, out_shape, list(hidden), batchnorm, activation, out_activation, num_classes, cond)


def mlp_discriminator(*, in_shape: Sequence[int], hidden: Sequence[int] = (512, 256),
                      activation: str = "leaky_relu", spectral_norm: bool = False,
                      num_classes: int = 0, cond: str = "auto", codes: int = 0) -> MLPDiscriminator:
    """MLP discriminator returning logits (LeakyReLU 0.2, optional spectral norm); class-conditional
    (cond: projection | concat) under a conditional objective; codes: an InfoGAN code / AC-GAN
    class head of that size."""
    if codes < 0:
        raise ValueError(f"codes is the size of the code head (0: none), got {codes}")
    _check_hidden(hidden)
    cond = check_condition("discriminator", cond, num_classes)
    return MLPDiscriminator(in_shape, list(hidden), activation, spectral_norm, num_classes, cond, codes)


def mlp_encoder(*, in_shape: Sequence[int], z_dim: int, hidden: Sequence[int] = (512, 256),
                activation: str = "leaky_relu") -> MLPEncoder:
    """MLP encoder: samples of ``in_shape`` -> codes of ``z_dim`` (a network of kind
    ``encoder`` in a system such as BiGAN)."""
    _check_hidden(hidden)
    return MLPEncoder(in_shape, z_dim, list(hidden), activation)


@hookimpl
def ganforge_register_networks(register):
    register("mlp_encoder", mlp_encoder)


@hookimpl
def ganforge_register_generators(register):
    register("mlp", mlp_generator)


@hookimpl
def ganforge_register_discriminators(register):
    register("mlp", mlp_discriminator)
