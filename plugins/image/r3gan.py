"""R3GAN's networks (Huang et al. 2024, "The GAN is dead; long live the GAN! A Modern GAN
Baseline"), after the reference ``R3GAN/Networks.py``, written anew: a minimalist ResNet for G
and D with no normalisation layers.

- Stages, one per resolution (4x4 up to the image's). Each block is an inverted bottleneck: a
  1x1 convolution to ``expansion`` x the width, a grouped 3x3 convolution (``cardinality``
  groups), a 1x1 convolution back; a bias and LeakyReLU(0.2) after the first two; added to its
  input.
- Fix-up initialisation: weights N(0, gain / sqrt(fan-in)) with gain = sqrt(2 / (1 + 0.2^2)) x
  L^(-1/4) (L: the number of blocks, 3 linear layers per block), and the block's last layer zero,
  so that every block starts as the identity.
- Resampling between stages is bilinear: R3GAN's [1, 2, 1] made even-length, [1, 3, 3, 1], in a
  stride-2 (transposed) convolution with padding 1; a 1x1 convolution changes the width.
- G starts from a learned 4x4 basis scaled per channel by a linear map of z (with classes: of z
  and the class's embedding), and ends with a 1x1 convolution to the image's channels; D starts
  with a 1x1 convolution and ends with a depthwise 4x4 convolution and a linear layer (with
  classes: projected on the class's embedding).

Train them with R3GAN's loss: ``loss: rpgan`` with ``r1`` and ``r2`` penalties, gamma, the
learning rate and beta2 ramped (``recipes/mnist_r3gan.yaml``, ``cifar10_r3gan.yaml``). Under
autocast the convolutions run in the autocast dtype and the biases, activations and outputs in
fp32 (D's logits are fp32).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ganforge import hookimpl
from ganforge.layers import downsample_2x as downsample, lowpass_2x, upsample_2x as upsample

__all__ = ["R3GANDiscriminator", "R3GANGenerator", "ResidualBlock"]

GAIN = math.sqrt(2 / (1 + 0.2 ** 2))  # LeakyReLU(0.2)'s


def _msr(weight: torch.Tensor, gain: float) -> torch.Tensor:
    """MSR (He) initialisation: N(0, gain / sqrt(fan-in)); gain 0: zeros (fix-up's last layer)."""
    fan_in = weight.shape[1] * weight[0][0].numel()
    with torch.no_grad():
        return weight.normal_(0.0, gain / math.sqrt(fan_in)) if gain else weight.zero_()


class Conv(nn.Module):
    """A bias-free convolution (padding to keep the size), MSR-initialised with ``gain``."""

    def __init__(self, c_in: int, c_out: int, kernel: int, groups: int = 1, gain: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(_msr(torch.empty(c_out, c_in // groups, kernel, kernel), gain))
        self.groups, self.padding = groups, (kernel - 1) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight.to(x.dtype), padding=self.padding, groups=self.groups)


class BiasedActivation(nn.Module):
    """A per-channel bias and LeakyReLU(0.2), in fp32."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return F.leaky_relu(x.float() + self.bias.float()[None, :, None, None], 0.2)


class ResidualBlock(nn.Module):
    """The inverted bottleneck: 1x1 to ``expansion`` x width, grouped 3x3, 1x1 back (zero at
    initialisation), each of the first two followed by a bias and LeakyReLU; plus the input."""

    def __init__(self, channels: int, cardinality: int, expansion: int, blocks_total: int):
        super().__init__()
        wide = channels * expansion
        if wide % cardinality:
            raise ValueError(f"cardinality {cardinality} must divide the expanded width {wide} "
                             f"(width {channels} x expansion {expansion})")
        gain = GAIN * blocks_total ** (-1 / (2 * 3 - 2))
        self.conv1 = Conv(channels, wide, 1, gain=gain)
        self.conv2 = Conv(wide, wide, 3, groups=cardinality, gain=gain)
        self.conv3 = Conv(wide, channels, 1, gain=0.0)
        self.act1, self.act2 = BiasedActivation(wide), BiasedActivation(wide)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv3(self.act2(self.conv2(self.act1(self.conv1(x)))))
        return x + y


def _stages(resolution: int, widths: Sequence[int] | None, width: int) -> list[int]:
    if resolution < 8 or resolution & (resolution - 1):
        raise ValueError(f"r3gan needs a power-of-two image size >= 8, got {resolution} (MNIST: data.args.pad=2)")
    count = int(math.log2(resolution)) - 1  # 4x4 ... resolution
    widths = list(widths) if widths else [width] * count
    if len(widths) != count:
        raise ValueError(f"widths: {count} stages (4x4 to {resolution}x{resolution}), got {len(widths)}")
    return widths


def _per_stage(value: int | Sequence[int], count: int, name: str) -> list[int]:
    values = [value] * count if isinstance(value, int) else list(value)
    if len(values) != count:
        raise ValueError(f"{name}: one per stage ({count}), got {len(values)}")
    return values


class R3GANGenerator(nn.Module):
    """z (and a class) -> images; see the module docstring. Stages from 4x4 up."""

    def __init__(self, z_dim: int, out_shape: Sequence[int], num_classes: int | None = None, width: int = 64,
                 widths: Sequence[int] | None = None, cardinality: int | Sequence[int] = 8,
                 blocks: int | Sequence[int] = 2, expansion: int = 2, embed: int | None = None):
        super().__init__()
        self.register_buffer("f", lowpass_2x(), persistent=False)  # the resampling filter
        if len(out_shape) != 3 or out_shape[1] != out_shape[2]:
            raise ValueError(f"r3gan makes square images (C, R, R), got samples of shape {tuple(out_shape)}")
        widths = _stages(out_shape[1], widths, width)
        cards, counts = _per_stage(cardinality, len(widths), "cardinality"), _per_stage(blocks, len(widths), "blocks")
        total = sum(counts)
        self.num_classes = num_classes or 0
        embed = (embed or z_dim) if self.num_classes else 0
        self.embed = nn.Linear(self.num_classes, embed, bias=False) if self.num_classes else None
        if self.embed is not None:
            _msr(self.embed.weight, 1.0)
        self.basis = nn.Parameter(torch.randn(widths[0], 4, 4))
        self.basis_scale = nn.Linear(z_dim + embed, widths[0], bias=False)
        _msr(self.basis_scale.weight, 1.0)
        self.stages = nn.ModuleList(nn.Sequential(*(ResidualBlock(w, card, expansion, total) for _ in range(count)))
                                    for w, card, count in zip(widths, cards, counts, strict=True))
        # between stages: the width changed by a 1x1 convolution, then 2x bilinear upsampling
        self.transitions = nn.ModuleList(Conv(a, b, 1) if a != b else nn.Identity()
                                         for a, b in zip(widths, widths[1:]))
        self.to_image = Conv(widths[-1], out_shape[0], 1)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            z = torch.cat([z, self.embed(F.one_hot(y.long(), self.num_classes).to(z.dtype))], dim=1)
        x = self.basis[None] * self.basis_scale(z)[:, :, None, None]
        for i, stage in enumerate(self.stages):
            if i:
                x = upsample(self.transitions[i - 1](x), self.f)
            x = stage(x)
        return self.to_image(x).float()


class R3GANDiscriminator(nn.Module):
    """Images (and classes) -> one logit each, fp32; see the module docstring. Stages from the
    image's resolution down to 4x4."""

    def __init__(self, in_shape: Sequence[int], num_classes: int | None = None, width: int = 64,
                 widths: Sequence[int] | None = None, cardinality: int | Sequence[int] = 8,
                 blocks: int | Sequence[int] = 2, expansion: int = 2, embed: int | None = None):
        super().__init__()
        self.register_buffer("f", lowpass_2x(), persistent=False)  # the resampling filter
        if len(in_shape) != 3 or in_shape[1] != in_shape[2]:
            raise ValueError(f"r3gan judges square images (C, R, R), got samples of shape {tuple(in_shape)}")
        widths = _stages(in_shape[1], widths, width)[::-1]  # resolution ... 4x4
        cards, counts = _per_stage(cardinality, len(widths), "cardinality")[::-1], \
            _per_stage(blocks, len(widths), "blocks")[::-1]
        total = sum(counts)
        self.from_image = Conv(in_shape[0], widths[0], 1)
        self.stages = nn.ModuleList(nn.Sequential(*(ResidualBlock(w, card, expansion, total) for _ in range(count)))
                                    for w, card, count in zip(widths, cards, counts, strict=True))
        # between stages: 2x bilinear downsampling, then the width changed by a 1x1 convolution
        self.transitions = nn.ModuleList(Conv(a, b, 1) if a != b else nn.Identity()
                                         for a, b in zip(widths, widths[1:]))
        self.num_classes = num_classes or 0
        out = (embed or widths[-1]) if self.num_classes else 1
        self.basis = Conv(widths[-1], widths[-1], 4, groups=widths[-1])  # (applied without padding)
        self.out = nn.Linear(widths[-1], out, bias=False)
        _msr(self.out.weight, 1.0)
        if self.num_classes:
            self.embed = nn.Linear(self.num_classes, out, bias=False)
            _msr(self.embed.weight, 1.0 / math.sqrt(out))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        x = self.from_image(x)
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i + 1 < len(self.stages):
                x = self.transitions[i](downsample(x, self.f))
        x = F.conv2d(x, self.basis.weight.to(x.dtype), groups=self.basis.groups).flatten(1)  # 4x4 -> 1x1
        with torch.autocast(x.device.type, enabled=False):
            x = self.out(x.float())
            if self.num_classes:
                x = (x * self.embed(F.one_hot(y.long(), self.num_classes).float())).sum(dim=1, keepdim=True)
        return x


def r3gan_generator(*, z_dim, out_shape, num_classes=None, width: int = 64, widths: Sequence[int] | None = None,
                    cardinality: int | Sequence[int] = 8, blocks: int | Sequence[int] = 2, expansion: int = 2,
                    embed: int | None = None):
    """R3GAN's generator: a 4x4 basis scaled by z, inverted-bottleneck ResNet stages with bilinear
    upsampling, fix-up initialisation, no normalisation; width (or widths per stage), cardinality,
    blocks per stage, expansion."""
    return R3GANGenerator(z_dim, out_shape, num_classes, width, widths, cardinality, blocks, expansion, embed)


def r3gan_discriminator(*, in_shape, num_classes=None, width: int = 64, widths: Sequence[int] | None = None,
                        cardinality: int | Sequence[int] = 8, blocks: int | Sequence[int] = 2, expansion: int = 2,
                        embed: int | None = None):
    """R3GAN's discriminator: the generator's mirror with bilinear downsampling, a depthwise 4x4
    basis and a linear output (projected on the class's embedding with classes)."""
    return R3GANDiscriminator(in_shape, num_classes, width, widths, cardinality, blocks, expansion, embed)


@hookimpl
def ganforge_register_generators(register):
    register("r3gan", r3gan_generator)


@hookimpl
def ganforge_register_discriminators(register):
    register("r3gan", r3gan_discriminator)
