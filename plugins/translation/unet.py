"""The U-Net generator of pix2pix.

Isola, Zhu, Zhou, Efros, "Image-to-Image Translation with Conditional Adversarial Networks"
(CVPR 2017), https://arxiv.org/abs/1611.07004, section 3.2.1 and appendix 6.1.1: an
encoder-decoder whose i-th decoder block also receives the i-th encoder block's output (skip
connections). Encoder ``C64-C128-C256-C512-C512-...``: 4x4 convolutions, stride 2,
LeakyReLU(0.2), normalisation on every block but the first and the innermost. Decoder: ReLU,
4x4 transposed convolutions, normalisation, dropout 0.5 on the blocks at the widest width
(the paper's ``CD512`` blocks), tanh out.

Any square power-of-two size from 32 up: the depth is log2(size), so the innermost feature map
is 1x1 (at 256 pixels this is the paper's ``unet_256``, 8 blocks; at 32 it has 5 and dropout on
the block above the innermost, since there is no other block at the widest width). ``norm``:
``batch`` (the paper's), ``instance`` or ``none``. Weights from N(0, 0.02), as in the paper.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ganforge import hookimpl

__all__ = ["UNetGenerator", "init_weights", "norm_layer"]

NORMS = ("batch", "instance", "none")


def norm_layer(kind: str, channels: int) -> nn.Module:
    """``batch`` (affine, running statistics), ``instance`` (no affine, no running statistics,
    as in pix2pix/CycleGAN) or ``none``."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {', '.join(NORMS)}, got '{kind}'")


def init_weights(module: nn.Module) -> None:
    """N(0, 0.02) convolutions, N(1, 0.02) BatchNorm scales (pix2pix/CycleGAN's 'normal')."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def square_size(shape: Sequence[int], what: str) -> int:
    if len(shape) != 3 or shape[1] != shape[2]:
        raise ValueError(f"{what} needs square images (C, H, H), got {tuple(shape)}")
    return shape[1]


class UNetBlock(nn.Module):
    """One level: ``x -> cat([x, up(inner(down(x)))])`` (the outermost level returns ``up(...)``)."""

    def __init__(self, outer: int, inner: int, sub: nn.Module | None, *, norm: str, dropout: float,
                 in_channels: int | None = None, out_channels: int | None = None):
        super().__init__()
        bias = norm != "batch"  # a BatchNorm after the conv makes its bias redundant
        self.outermost, innermost = out_channels is not None, sub is None
        down = nn.Conv2d(in_channels or outer, inner, 4, 2, 1, bias=bias)
        if self.outermost:
            self.down = down
            self.up = nn.Sequential(nn.ReLU(True), nn.ConvTranspose2d(inner * 2, out_channels, 4, 2, 1), nn.Tanh())
        elif innermost:
            self.down = nn.Sequential(nn.LeakyReLU(0.2, True), down)
            self.up = nn.Sequential(nn.ReLU(True), nn.ConvTranspose2d(inner, outer, 4, 2, 1, bias=bias),
                                    norm_layer(norm, outer))
        else:
            self.down = nn.Sequential(nn.LeakyReLU(0.2, True), down, norm_layer(norm, inner))
            self.up = nn.Sequential(nn.ReLU(True), nn.ConvTranspose2d(inner * 2, outer, 4, 2, 1, bias=bias),
                                    norm_layer(norm, outer), *([nn.Dropout(dropout)] if dropout else []))
        self.sub = sub

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.down(x)
        if self.sub is not None:
            h = self.sub(h)
        h = self.up(h)
        return h if self.outermost else torch.cat([x, h], 1)


class UNetGenerator(nn.Module):
    def __init__(self, in_shape: Sequence[int], out_shape: Sequence[int], ngf: int = 64, norm: str = "batch",
                 dropout: float = 0.5, depth: int | None = None):
        super().__init__()
        if ngf < 1:
            raise ValueError(f"ngf is a number of channels >= 1, got {ngf}")
        size = square_size(in_shape, "the U-Net generator")
        if tuple(in_shape[1:]) != tuple(out_shape[1:]):
            raise ValueError(f"the U-Net maps images to images of the same size; input {tuple(in_shape)}, "
                             f"target {tuple(out_shape)}")
        if size < 32 or size & (size - 1):
            raise ValueError(f"the U-Net generator takes square power-of-two images from 32 pixels up, got "
                             f"{size}x{size}; resize the data (data.args.size)")
        norm_layer(norm, 1)  # a bad name fails here, with the known ones
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout is a probability in [0, 1), got {dropout}")
        depth = depth or size.bit_length() - 1  # down to 1x1
        if not 5 <= depth <= size.bit_length() - 1:
            raise ValueError(f"depth must be from 5 to {size.bit_length() - 1} (1x1 at the bottom) for "
                             f"{size}x{size} images, got {depth}")
        widths = [ngf * min(2 ** i, 8) for i in range(depth)]  # encoder outputs, outermost first
        # dropout on the decoder blocks at the widest width (not the innermost); at small sizes,
        # where there are none, on the block above the innermost
        wide = [i for i in range(1, depth - 1) if widths[i - 1] == widths[i]]
        drop = set(wide or [depth - 2])
        block = UNetBlock(widths[-2], widths[-1], None, norm=norm, dropout=0)
        for i in range(depth - 2, 0, -1):
            block = UNetBlock(widths[i - 1], widths[i], block, norm=norm, dropout=dropout if i in drop else 0)
        self.model = UNetBlock(widths[0], widths[0], block, norm=norm, dropout=0,
                               in_channels=in_shape[0], out_channels=out_shape[0])
        self.depth = depth
        self.apply(init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def unet(*, in_shape, out_shape, ngf: int = 64, norm: str = "batch", dropout: float = 0.5,
         depth: int | None = None):
    """pix2pix's U-Net (skip connections, dropout in the decoder), any power-of-two size >= 32."""
    return UNetGenerator(in_shape, out_shape, ngf, norm, dropout, depth)


@hookimpl
def ganforge_register_generators(register):
    register("unet", unet)
