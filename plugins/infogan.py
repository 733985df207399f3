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
from ganforge.layers import forward_with_code_head

__all__ = ["InfoGANDiscriminator", "InfoGANGenerator"]

NORMS = ("batch", "spectral", "none")


def _check_shape(shape: Sequence[int]) -> int:
    if len(shape) != 3 or tuple(shape[1:]) != (28, 28):
        raise ValueError(f"needs 28x28 images (C, 28, 28), got samples of shape {tuple(shape)}; "
                         f"use generator/discriminator 'dcgan' for other sizes")
    return shape[0]


class InfoGANGenerator(nn.Module):
    def __init__(self, z_dim: int, out_shape: Sequence[int], ngf: int = 64, fc: int = 1024):
        super().__init__()
        channels = _check_shape(out_shape)
        self.fc = nn.Sequential(
            nn.Linear(z_dim, fc), nn.BatchNorm1d(fc), nn.ReLU(True),
            nn.Linear(fc, 2 * ngf * 7 * 7), nn.BatchNorm1d(2 * ngf * 7 * 7), nn.ReLU(True),
        )
        self.conv = nn.Sequential(
            nn.ConvTranspose2d(2 * ngf, ngf, 4, 2, 1), nn.BatchNorm2d(ngf), nn.ReLU(True),  # 14x14
            nn.ConvTranspose2d(ngf, channels, 4, 2, 1), nn.Tanh(),                            # 28x28
        )
        self.width = 2 * ngf

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.conv(self.fc(z.view(z.shape[0], -1)).view(-1, self.width, 7, 7))


class InfoGANDiscriminator(nn.Module):
    def __init__(self, in_shape: Sequence[int], ndf: int = 64, fc: int = 1024, norm: str = "batch",
                 codes: int = 0):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}, got '{norm}'")
        if codes < 0:
            raise ValueError(f"codes is the size of the code head (0: none), got {codes}")
        channels = _check_shape(in_shape)
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

    def forward(self, x: torch.Tensor, codes: bool = False):
        """Logits; with ``codes=True``, ``(logits, code_logits)`` from the Q head."""
        return forward_with_code_head(self.net, self.q, x, codes)


def infogan_generator(*, z_dim: int, out_shape: Sequence[int], ngf: int = 64, fc: int = 1024) -> InfoGANGenerator:
    """InfoGAN's MNIST generator (Chen et al. 2016): two FC layers, two up-convolutions; 28x28."""
    return InfoGANGenerator(z_dim, out_shape, ngf, fc)


def infogan_discriminator(*, in_shape: Sequence[int], ndf: int = 64, fc: int = 1024,
                          norm: str = "batch", codes: int = 0) -> InfoGANDiscriminator:
    """InfoGAN's MNIST discriminator (Chen et al. 2016) returning logits; norm: batch | spectral |
    none; codes: size of the categorical-code (Q) head (0: none)."""
    return InfoGANDiscriminator(in_shape, ndf, fc, norm, codes)


@hookimpl
def ganforge_register_generators(register):
    register("infogan", infogan_generator)


@hookimpl
def ganforge_register_discriminators(register):
    register("infogan", infogan_discriminator)
