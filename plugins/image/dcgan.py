"""DCGAN generator and discriminator.

Radford, Metz, Chintala, "Unsupervised Representation Learning with Deep Convolutional Generative
Adversarial Networks" (2015), https://arxiv.org/abs/1511.06434: transposed convolutions with
BatchNorm and ReLU in G (tanh out), strided convolutions with BatchNorm and LeakyReLU(0.2) in D
(no BN on D's first layer), weights from N(0, 0.02).

Sizes: 28x28 (via a 7x7 base map; not in the paper, which works at 64x64) and powers of two
from 16 to 256 (4x4 base map), any number of channels. D returns logits (no sigmoid).

Class-conditional when the objective passes ``num_classes`` (``objective=conditional``): G's
``cond`` is ``cbn`` (every BatchNorm class-conditional, as in BigGAN/StudioGAN) or ``concat``
(a one-hot label appended to z); D's is ``projection`` (Miyato & Koyama 2018: logit +
<embed(y), sum-pooled features before the last conv>) or ``concat`` (one-hot label maps as
extra input channels). ``auto``: cbn and projection.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ganforge import hookimpl
from ganforge.layers import (ConditionalBatchNorm, check_condition, discriminator_forward, needs_labels, one_hot,
                             run_conditional)

__all__ = ["DCGANDiscriminator", "DCGANGenerator"]


def _plan(shape: Sequence[int]) -> tuple[int, int, int]:
    """(channels, base map size, number of x2 resolution steps) for an image shape."""
    if len(shape) != 3 or shape[1] != shape[2]:
        raise ValueError(f"needs square images (C, H, H), got samples of shape {tuple(shape)}")
    channels, size = shape[0], shape[1]
    if size == 28:
        return channels, 7, 2
    steps = size.bit_length() - 3  # 4 * 2**steps == size
    if size < 16 or size > 256 or 4 * 2**steps != size:
        raise ValueError(
            f"supports 28x28 and 16, 32, 64, 128, 256 pixel squares; got {size}x{size}. "
            f"Resize the data (e.g. data.args.size=64 for an image folder)"
        )
    return channels, 4, steps


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d) and module.affine:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class DCGANGenerator(nn.Module):
    def __init__(self, z_dim: int, out_shape: Sequence[int], ngf: int = 64, num_classes: int = 0,
                 cond: str = "none"):
        super().__init__()
        channels, base, steps = _plan(out_shape)
        self.cond, self.num_classes = cond, num_classes

        def bn(width: int) -> nn.Module:
            return ConditionalBatchNorm(width, num_classes) if cond == "cbn" else nn.BatchNorm2d(width)

        width = ngf * 2 ** (steps - 1)
        z_in = z_dim + (num_classes if cond == "concat" else 0)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(z_in, width, base, 1, 0, bias=False),
            bn(width), nn.ReLU(True),
        ]
        for _ in range(steps - 1):
            layers += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False),
                       bn(width // 2), nn.ReLU(True)]
            width //= 2
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.z_dim, self.z_in = z_dim, z_in
        self.apply(_init_weights)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.cond == "none":
            return self.net(z.view(z.shape[0], self.z_dim, 1, 1))
        needs_labels(self.cond, y, "generator")
        if self.cond == "concat":
            z = torch.cat([z, one_hot(y, self.num_classes, z.dtype)], 1)
        return run_conditional(self.net, z.view(z.shape[0], self.z_in, 1, 1), y)


NORMS = ("batch", "spectral", "none")


class DCGANDiscriminator(nn.Module):
    """``norm``: ``batch`` (the paper: BatchNorm after every conv but the first), ``spectral``
    (spectral normalisation of every conv, no BatchNorm: Miyato et al. 2018) or ``none`` (for
    use with a gradient penalty such as R1, which BatchNorm in D interferes with).

    ``codes`` > 0 adds InfoGAN's Q head (Chen et al. 2016), a second output layer on the same
    features predicting a categorical code of that many classes: ``D(x, codes=True)`` returns
    ``(logits, code_logits)``; used by the ``infogan`` objective."""

    def __init__(self, in_shape: Sequence[int], ndf: int = 64, norm: str = "batch", codes: int = 0,
                 num_classes: int = 0, cond: str = "none"):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}, got '{norm}'")
        if codes < 0:
            raise ValueError(f"codes is the size of the code head (0: none), got {codes}")
        channels, base, steps = _plan(in_shape)
        self.cond, self.num_classes = cond, num_classes
        channels += num_classes if cond == "concat" else 0
        bias = norm != "batch"  # BatchNorm has its own shift

        def conv(c_in: int, c_out: int, *args: int) -> nn.Module:
            layer = nn.Conv2d(c_in, c_out, *args, bias=bias)
            return nn.utils.parametrizations.spectral_norm(layer) if norm == "spectral" else layer

        layers: list[nn.Module] = [conv(channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        width = ndf
        for _ in range(steps - 1):
            layers.append(conv(width, width * 2, 4, 2, 1))
            if norm == "batch":
                layers.append(nn.BatchNorm2d(width * 2))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            width *= 2
        layers.append(conv(width, 1, base, 1, 0))
        self.net = nn.Sequential(*layers)
        self.q = conv(width, codes, base, 1, 0) if codes > 0 else None
        if norm != "spectral":  # spectral norm rescales the weights itself
            self.apply(_init_weights)
        if cond == "projection":
            embed = nn.Embedding(num_classes, width)
            nn.init.xavier_uniform_(embed.weight)
            self.embed = nn.utils.parametrizations.spectral_norm(embed) if norm == "spectral" else embed

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, codes: bool = False):
        """Logits; with ``codes=True``, ``(logits, code_logits)`` from the Q head; ``y``: the
        labels of a class-conditional D."""
        return discriminator_forward(self, x, y, codes)


def dcgan_generator(*, z_dim: int, out_shape: Sequence[int], ngf: int = 64, num_classes: int = 0,
                    cond: str = "auto") -> DCGANGenerator:
    """DCGAN generator (Radford et al. 2015) for 28x28 and 16..256 px square images;
    class-conditional (cond: cbn | concat) under a conditional objective."""
    if ngf < 1:
        raise ValueError(f"ngf is the generator's base width, >= 1 (64 in the paper), got {ngf}")
    return DCGANGenerator(z_dim, out_shape, ngf, num_classes, check_condition("generator", cond, num_classes))


def dcgan_discriminator(*, in_shape: Sequence[int], ndf: int = 64, norm: str = "batch",
                        codes: int = 0, num_classes: int = 0, cond: str = "auto") -> DCGANDiscriminator:
    """DCGAN discriminator (Radford et al. 2015) returning logits; norm: batch | spectral | none;
    codes: size of an InfoGAN code / AC-GAN class head (0: none); class-conditional (cond:
    projection | concat) under a conditional objective."""
    if ndf < 1:
        raise ValueError(f"ndf is the discriminator's base width, >= 1 (64 in the paper), got {ndf}")
    cond = check_condition("discriminator", cond, num_classes)
    return DCGANDiscriminator(in_shape, ndf, norm, codes, num_classes, cond)


@hookimpl
def ganforge_register_generators(register):
    register("dcgan", dcgan_generator)


@hookimpl
def ganforge_register_discriminators(register):
    register("dcgan", dcgan_discriminator)
