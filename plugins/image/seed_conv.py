"""The reference MNIST GAN's convolutional discriminator, fixed.

conv 1->64 (k4 s2 p1, LeakyReLU 0.2) -> 128 (k4 s2 p1, BN, LeakyReLU) -> 256 (k4 s2 p1, BN,
LeakyReLU) -> 1. The original's last conv has kernel 4 and no padding and meets a 3x3 map on
28x28 input, so it cannot run; here it has kernel 3, which maps 3x3 to 1x1 as intended. It
returns logits: the sigmoid lives in the loss (BCE with logits), which is what makes it safe
under mixed precision.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ganforge import hookimpl

__all__ = ["SeedConvDiscriminator"]


class SeedConvDiscriminator(nn.Module):
    def __init__(self, channels: int = 1):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, 64, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True),          # 28 -> 14
            nn.Conv2d(64, 128, 4, 2, 1), nn.BatchNorm2d(128), nn.LeakyReLU(0.2, inplace=True),  # 7
            nn.Conv2d(128, 256, 4, 2, 1), nn.BatchNorm2d(256), nn.LeakyReLU(0.2, inplace=True),  # 3
            nn.Conv2d(256, 1, 3, 1, 0),  # the fix: kernel 3 (the reference had 4) -> 1x1
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).view(-1)


def seed_conv_discriminator(*, in_shape: Sequence[int]) -> SeedConvDiscriminator:
    """The reference MNIST GAN's conv discriminator (last conv fixed to kernel 3); 28x28 only."""
    if len(in_shape) != 3 or tuple(in_shape[1:]) != (28, 28):
        raise ValueError(
            f"needs 28x28 images (C, 28, 28), got samples of shape {tuple(in_shape)}; "
            f"use discriminator 'dcgan' for 32x32 or 64x64"
        )
    return SeedConvDiscriminator(in_shape[0])


@hookimpl
def ganforge_register_discriminators(register):
    register("seed_conv", seed_conv_discriminator)
