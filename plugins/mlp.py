"""Multilayer-perceptron generator and discriminator.

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

__all__ = ["MLPDiscriminator", "MLPGenerator"]


def _activation(name: str) -> nn.Module:
    acts = {"relu": nn.ReLU(), "leaky_relu": nn.LeakyReLU(0.2), "elu": nn.ELU(), "tanh": nn.Tanh()}
    if name not in acts:
        raise ValueError(f"activation must be one of {', '.join(acts)}, got '{name}'")
    return acts[name]


class MLPGenerator(nn.Module):
    def __init__(self, z_dim: int, out_shape: Sequence[int], hidden: Sequence[int],
                 batchnorm: bool, activation: str, out_activation: str):
        super().__init__()
        self.out_shape = tuple(out_shape)
        layers: list[nn.Module] = []
        width = z_dim
        for h in hidden:
            layers.append(nn.Linear(width, h))
            if batchnorm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(_activation(activation))
            width = h
        layers.append(nn.Linear(width, math.prod(self.out_shape)))
        if out_activation != "none":
            layers.append(_activation(out_activation))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(z.shape[0], *self.out_shape)


class MLPDiscriminator(nn.Module):
    def __init__(self, in_shape: Sequence[int], hidden: Sequence[int], activation: str,
                 spectral_norm: bool):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(in_shape)
        wrap = nn.utils.parametrizations.spectral_norm if spectral_norm else (lambda m: m)
        for h in hidden:
            layers += [wrap(nn.Linear(width, h)), _activation(activation)]
            width = h
        layers.append(wrap(nn.Linear(width, 1)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).view(-1)


def mlp_generator(*, z_dim: int, out_shape: Sequence[int], hidden: Sequence[int] = (256, 512, 1024),
                  batchnorm: bool = True, activation: str = "relu",
                  out_activation: str = "auto") -> MLPGenerator:
    """MLP generator (defaults: the reference MNIST GAN's G, tanh out for images)."""
    if out_activation == "auto":  # images live in [-1, 1]; vectors are unbounded
        out_activation = "tanh" if len(out_shape) == 3 else "none"
    return MLPGenerator(z_dim, out_shape, list(hidden), batchnorm, activation, out_activation)


def mlp_discriminator(*, in_shape: Sequence[int], hidden: Sequence[int] = (512, 256),
                      activation: str = "leaky_relu", spectral_norm: bool = False) -> MLPDiscriminator:
    """MLP discriminator returning logits (LeakyReLU 0.2, optional spectral norm)."""
    return MLPDiscriminator(in_shape, list(hidden), activation, spectral_norm)


@hookimpl
def ganforge_register_generators(register):
    register("mlp", mlp_generator)


@hookimpl
def ganforge_register_discriminators(register):
    register("mlp", mlp_discriminator)
