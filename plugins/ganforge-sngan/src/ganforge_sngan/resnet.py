"""SNGAN ResNet generator and discriminator for 32x32 images.

Miyato, Kataoka, Koyama, Yoshida, "Spectral Normalization for Generative Adversarial Networks"
(ICLR 2018), https://arxiv.org/abs/1802.05957, appendix B.4 (CIFAR-10 ResNet). D returns
logits; train it with loss 'hinge' as in the paper.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

import ganforge

GANFORGE_PLUGIN_API = 2  # the ganforge plugin API this module was written for


class GBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(ch), nn.BatchNorm2d(ch)
        self.conv1, self.conv2 = nn.Conv2d(ch, ch, 3, 1, 1), nn.Conv2d(ch, ch, 3, 1, 1)
        self.up = nn.Upsample(scale_factor=2)

    def forward(self, x):
        h = self.conv1(self.up(torch.relu(self.bn1(x))))
        h = self.conv2(torch.relu(self.bn2(h)))
        return h + self.up(x)


class DBlock(nn.Module):
    def __init__(self, cin: int, cout: int, down: bool, first: bool = False):
        super().__init__()
        self.conv1 = spectral_norm(nn.Conv2d(cin, cout, 3, 1, 1))
        self.conv2 = spectral_norm(nn.Conv2d(cout, cout, 3, 1, 1))
        self.skip = spectral_norm(nn.Conv2d(cin, cout, 1)) if (cin != cout or down) else None
        self.down, self.first = down, first

    def forward(self, x):
        h = x if self.first else torch.relu(x)
        h = self.conv2(torch.relu(self.conv1(h)))
        s = x
        if self.down:
            h = nn.functional.avg_pool2d(h, 2)
        if self.skip is not None:
            s = self.skip(s if not self.first else nn.functional.avg_pool2d(s, 2))
            if self.down and not self.first:
                s = nn.functional.avg_pool2d(s, 2)
        return h + s


class SNGANGenerator(nn.Module):
    def __init__(self, z_dim: int, channels: int, ch: int):
        super().__init__()
        self.ch = ch
        self.linear = nn.Linear(z_dim, 4 * 4 * ch)
        self.blocks = nn.Sequential(GBlock(ch), GBlock(ch), GBlock(ch))
        self.out = nn.Sequential(nn.BatchNorm2d(ch), nn.ReLU(), nn.Conv2d(ch, channels, 3, 1, 1), nn.Tanh())

    def forward(self, z):
        return self.out(self.blocks(self.linear(z).view(-1, self.ch, 4, 4)))


class SNGANDiscriminator(nn.Module):
    def __init__(self, channels: int, ch: int):
        super().__init__()
        self.blocks = nn.Sequential(DBlock(channels, ch, True, first=True), DBlock(ch, ch, True),
                                    DBlock(ch, ch, False), DBlock(ch, ch, False))
        self.linear = spectral_norm(nn.Linear(ch, 1))

    def forward(self, x):
        h = torch.relu(self.blocks(x)).sum(dim=(2, 3))  # global sum pooling
        return self.linear(h).view(-1)


def _check(shape):
    if tuple(shape[1:]) != (32, 32):
        raise ValueError(f"SNGAN ResNet is built for 32x32 images, got {tuple(shape)}; "
                         f"resize the data to 32 (e.g. data.args.size=32)")


def sngan_generator(*, z_dim, out_shape, ch: int = 256):
    """SNGAN ResNet generator, 32x32 (Miyato et al. 2018)."""
    _check(out_shape)
    return SNGANGenerator(z_dim, out_shape[0], ch)


def sngan_discriminator(*, in_shape, ch: int = 128):
    """SNGAN ResNet discriminator with spectral norm, 32x32 (Miyato et al. 2018)."""
    _check(in_shape)
    return SNGANDiscriminator(in_shape[0], ch)


@ganforge.hookimpl
def ganforge_register_generators(register):
    register("sngan", sngan_generator)


@ganforge.hookimpl
def ganforge_register_discriminators(register):
    register("sngan", sngan_discriminator)
