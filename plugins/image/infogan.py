"""The MNIST generator and discriminator of InfoGAN.

Chen et al., "InfoGAN: Interpretable Representation Learning by Information Maximizing
Generative Adversarial Nets" (2016), https://arxiv.org/abs/1606.03657, appendix C.1.

- G: FC 1024 - BN - ReLU, FC 7x7x128 - BN - ReLU, up-conv 64 (4x4, stride 2) - BN - ReLU,
  up-conv 1 (4x4, stride 2), tanh (the paper has a sigmoid for images in [0, 1]; ganforge's
  images are in [-1, 1]).
- D: conv 64 (4x4, stride 2) - LeakyReLU 0.1, conv 128 (4x4, stride 2) - BN - LeakyReLU 0.1,
  FC 1024 - BN - LeakyReLU 0.1, FC 1 (a logit).

Unlike ``dcgan`` (all convolutions), both networks have a wide fully connected layer at the
7x7 scale. At ngf = ndf = 32 and fc = 512 (recipe ``mnist_fc_r1``) they train at 75-85% of the
speed of a 32-channel ``dcgan`` on the CPU, and learned MNIST far better per step and per hour
(benchmarks/RESULTS.md). ``norm`` in D: ``batch`` (the paper), ``spectral``
or ``none`` (for a gradient penalty such as R1). Widths scale with ``ngf`` / ``ndf``
(64 = the paper). Any 28x28 image (channels from the data). ``codes`` > 0 gives D the paper's
Q head for a categorical code of that many classes (here one linear layer on D's FC features;
see the ``infogan`` objective).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ganforge import hookimpl
from ganforge.layers import (ConditionalBatchNorm, check_condition, discriminator_forward, needs_labels, one_hot,
                             run_conditional)

__all__ = ["InfoGANDiscriminator", "InfoGANGenerator"]

NORMS = ("batch", "spectral", "none")


def _check_shape(shape: Sequence[int]) -> int:
    if len(shape) != 3 or tuple(shape[1:]) != (28, 28):
        raise ValueError(f"needs 28x28 images (C, 28, 28), got samples of shape {tuple(shape)}; "
                         f"use generator/discriminator 'dcgan' for other sizes")
    return shape[0]


class InfoGANGenerator(nn.Module):
    """``cond`` (under a conditional objective): ``cbn`` makes every BatchNorm class-conditional,
    ``concat`` appends a one-hot label to z."""

    def __init__(self, z_dim: int, out_shape: Sequence[int], ngf: int = 64, fc: int = 1024,
                 num_classes: int = 0, cond: str = "none"):
        super().__init__()
        channels = _check_shape(out_shape)
        self.cond, self.num_classes = cond, num_classes

        def bn(width: int, dims: int) -> nn.Module:
            if cond == "cbn":
                return ConditionalBatchNorm(width, num_classes, dims)
            return nn.BatchNorm1d(width) if dims == 1 else nn.BatchNorm2d(width)

        z_in = z_dim + (num_classes if cond == "concat" else 0)
        self.fc = nn.Sequential(
            nn.Linear(z_in, fc), bn(fc, 1), nn.ReLU(True),
            nn.Linear(fc, 2 * ngf * 7 * 7), bn(2 * ngf * 7 * 7, 1), nn.ReLU(True),
        )
        self.conv = nn.Sequential(
            nn.ConvTranspose2d(2 * ngf, ngf, 4, 2, 1), bn(ngf, 2), nn.ReLU(True),  # 14x14
            nn.ConvTranspose2d(ngf, channels, 4, 2, 1), nn.Tanh(),                   # 28x28
        )
        self.width = 2 * ngf

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.cond == "none":
            return self.conv(self.fc(z.view(z.shape[0], -1)).view(-1, self.width, 7, 7))
        needs_labels(self.cond, y, "generator")
        z = z.view(z.shape[0], -1)
        if self.cond == "concat":
            z = torch.cat([z, one_hot(y, self.num_classes, z.dtype)], 1)
        return run_conditional(self.conv, run_conditional(self.fc, z, y).view(-1, self.width, 7, 7), y)


class InfoGANDiscriminator(nn.Module):
    def __init__(self, in_shape: Sequence[int], ndf: int = 64, fc: int = 1024, norm: str = "batch",
                 codes: int = 0, num_classes: int = 0, cond: str = "none"):
        super().__init__()
        self.cond, self.num_classes = cond, num_classes
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}, got '{norm}'")
        if codes < 0:
            raise ValueError(f"codes is the size of the code head (0: none), got {codes}")
        channels = _check_shape(in_shape) + (num_classes if cond == "concat" else 0)
        wrap = nn.utils.parametrizations.spectral_norm if norm == "spectral" else (lambda m: m)

        def bn(kind: type[nn.Module], width: int) -> list[nn.Module]:
            return [kind(width)] if norm == "batch" else []

        self.net = nn.Sequential(
            wrap(nn.Conv2d(channels, ndf, 4, 2, 1)), nn.LeakyReLU(0.1, True),                # 14x14
            wrap(nn.Conv2d(ndf, 2 * ndf, 4, 2, 1)), *bn(nn.BatchNorm2d, 2 * ndf),
            nn.LeakyReLU(0.1, True),                                                          # 7x7
            nn.Flatten(),
            wrap(nn.Linear(2 * ndf * 7 * 7, fc)), *bn(nn.BatchNorm1d, fc), nn.LeakyReLU(0.1, True),
            wrap(nn.Linear(fc, 1)),
        )
        self.q = wrap(nn.Linear(fc, codes)) if codes > 0 else None
        if cond == "projection":
            embed = nn.Embedding(num_classes, fc)
            nn.init.xavier_uniform_(embed.weight)
            self.embed = wrap(embed)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, codes: bool = False):
        """Logits; with ``codes=True``, ``(logits, code_logits)`` from the Q head; ``y``: the
        labels of a class-conditional D (projection on the FC features, or concat)."""
        return discriminator_forward(self, x, y, codes)


def infogan_generator(*, z_dim: int, out_shape: Sequence[int], ngf: int = 64, fc: int = 1024,
                      num_classes: int = 0, cond: str = "auto") -> InfoGANGenerator:
    """InfoGAN's MNIST generator (Chen et al. 2016): two FC layers, two up-convolutions; 28x28;
    class-conditional (cond: cbn | concat) under a conditional objective."""
    return InfoGANGenerator(z_dim, out_shape, ngf, fc, num_classes, check_condition("generator", cond, num_classes))


def infogan_discriminator(*, in_shape: Sequence[int], ndf: int = 64, fc: int = 1024,
                          norm: str = "batch", codes: int = 0, num_classes: int = 0,
                          cond: str = "auto") -> InfoGANDiscriminator:
    """InfoGAN's MNIST discriminator (Chen et al. 2016) returning logits; norm: batch | spectral |
    none; codes: size of the categorical-code (Q) / AC-GAN class head (0: none); class-conditional
    (cond: projection | concat) under a conditional objective."""
    cond = check_condition("discriminator", cond, num_classes)
    return InfoGANDiscriminator(in_shape, ndf, fc, norm, codes, num_classes, cond)


@hookimpl
def ganforge_register_generators(register):
    register("infogan", infogan_generator)


@hookimpl
def ganforge_register_discriminators(register):
    register("infogan", infogan_discriminator)
