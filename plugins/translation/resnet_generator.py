"""The ResNet generator of CycleGAN.

Zhu, Park, Isola, Efros, "Unpaired Image-to-Image Translation using Cycle-Consistent Adversarial
Networks" (ICCV 2017), https://arxiv.org/abs/1703.10593, appendix 7.2 (after Johnson et al.
2016): ``c7s1-64, d128, d256, R256 x blocks, u128, u64, c7s1-3``: a 7x7 convolution, two
stride-2 downsamplings, residual blocks (two 3x3 convolutions, reflection padding), two
stride-2 transposed convolutions and a 7x7 convolution with tanh. 9 blocks for 256-pixel
images, 6 for 128 and smaller (the paper's choice); instance norm by default.
Any square size divisible by 4.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ganforge import hookimpl
from ganforge.plugins.translation.unet import init_weights, norm_layer, square_size

__all__ = ["ResnetGenerator"]


class ResnetBlock(nn.Module):
    def __init__(self, channels: int, norm: str, dropout: float):
        super().__init__()
        bias = norm != "batch"
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias), norm_layer(norm, channels),
            nn.ReLU(True), *([nn.Dropout(dropout)] if dropout else []),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias), norm_layer(norm, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    def __init__(self, in_shape: Sequence[int], out_shape: Sequence[int], ngf: int = 64, blocks: int | None = None,
                 norm: str = "instance", dropout: float = 0.0):
        super().__init__()
        if ngf < 1:
            raise ValueError(f"ngf is a number of channels >= 1, got {ngf}")
        size = square_size(in_shape, "the ResNet generator")
        if tuple(in_shape[1:]) != tuple(out_shape[1:]) or size % 4:
            raise ValueError(f"the ResNet generator maps square images whose size is divisible by 4 to "
                             f"images of the same size; got input {tuple(in_shape)}, target {tuple(out_shape)}")
        blocks = blocks if blocks is not None else (9 if size >= 256 else 6)
        if blocks < 1:
            raise ValueError(f"blocks must be >= 1 (the paper: 6 or 9), got {blocks}")
        bias = norm != "batch"
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(in_shape[0], ngf, 7, bias=bias), norm_layer(norm, ngf), nn.ReLU(True)]
        for mult in (1, 2):  # d128, d256
            layers += [nn.Conv2d(ngf * mult, ngf * mult * 2, 3, 2, 1, bias=bias), norm_layer(norm, ngf * mult * 2),
                       nn.ReLU(True)]
        layers += [ResnetBlock(ngf * 4, norm, dropout) for _ in range(blocks)]
        for mult in (4, 2):  # u128, u64
            layers += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, 2, 1, output_padding=1, bias=bias),
                       norm_layer(norm, ngf * mult // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_shape[0], 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        self.blocks = blocks
        self.apply(init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def resnet_generator(*, in_shape, out_shape, ngf: int = 64, blocks: int | None = None, norm: str = "instance",
                     dropout: float = 0.0):
    """CycleGAN's ResNet generator (6 or 9 residual blocks; default by size), any size divisible by 4."""
    return ResnetGenerator(in_shape, out_shape, ngf, blocks, norm, dropout)


@hookimpl
def ganforge_register_generators(register):
    register("resnet_generator", resnet_generator)
