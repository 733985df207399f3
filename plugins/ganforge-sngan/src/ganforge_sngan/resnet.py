"""SNGAN ResNet generator and discriminator for 32x32 images.

Miyato, Kataoka, Koyama, Yoshida, "Spectral Normalization for Generative Adversarial Networks"
(ICLR 2018), https://arxiv.org/abs/1802.05957, appendix B.4 (CIFAR-10 ResNet). D returns
logits; train it with loss 'hinge' as in the paper.

Under a class-conditional objective (``objective=conditional``) they become the cGAN-PD of
Miyato & Koyama, "cGANs with Projection Discriminator" (ICLR 2018), as in Mimicry: the
generator's blocks use class-conditional BatchNorm, and D adds the projection
``<embed(y), h>`` (spectral-normalised embedding) to its logit on the pooled features.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

import ganforge
from ganforge.layers import ConditionalBatchNorm, projection

GANFORGE_PLUGIN_API = 2  # the ganforge plugin API this module was written for


class GBlock(nn.Module):
    def __init__(self, ch: int, num_classes: int = 0):
        super().__init__()
        if num_classes:
            self.bn1, self.bn2 = ConditionalBatchNorm(ch, num_classes), ConditionalBatchNorm(ch, num_classes)
        else:
            self.bn1, self.bn2 = nn.BatchNorm2d(ch), nn.BatchNorm2d(ch)
        self.conv1, self.conv2 = nn.Conv2d(ch, ch, 3, 1, 1), nn.Conv2d(ch, ch, 3, 1, 1)
        self.up = nn.Upsample(scale_factor=2)
        self.conditional = bool(num_classes)

    def _bn(self, bn, x, y):
        return bn(x, y) if self.conditional else bn(x)

    def forward(self, x, y=None):
        h = self.conv1(self.up(torch.relu(self._bn(self.bn1, x, y))))
        h = self.conv2(torch.relu(self._bn(self.bn2, h, y)))
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
    def __init__(self, z_dim: int, channels: int, ch: int, num_classes: int = 0):
        super().__init__()
        self.ch, self.num_classes = ch, num_classes
        self.linear = nn.Linear(z_dim, 4 * 4 * ch)
        self.blocks = nn.Sequential(*(GBlock(ch, num_classes) for _ in range(3)))
        self.out = nn.Sequential(nn.BatchNorm2d(ch), nn.ReLU(), nn.Conv2d(ch, channels, 3, 1, 1), nn.Tanh())

    def forward(self, z, y=None):
        if self.num_classes and y is None:
            raise ValueError("this generator is class-conditional: call it with labels")
        h = self.linear(z).view(-1, self.ch, 4, 4)
        for block in self.blocks:
            h = block(h, y)
        return self.out(h)


class SNGANDiscriminator(nn.Module):
    def __init__(self, channels: int, ch: int, num_classes: int = 0):
        super().__init__()
        self.blocks = nn.Sequential(DBlock(channels, ch, True, first=True), DBlock(ch, ch, True),
                                    DBlock(ch, ch, False), DBlock(ch, ch, False))
        self.linear = spectral_norm(nn.Linear(ch, 1))
        self.num_classes = num_classes
        if num_classes:  # the projection discriminator's class embedding, spectral-normalised
            embed = nn.Embedding(num_classes, ch)
            nn.init.xavier_uniform_(embed.weight)
            self.embed = spectral_norm(embed)

    def forward(self, x, y=None):
        h = torch.relu(self.blocks(x)).sum(dim=(2, 3))  # global sum pooling
        if not self.num_classes:
            return self.linear(h).view(-1)
        if y is None:
            raise ValueError("this discriminator is class-conditional: call it with labels")
        return self.linear(h).view(-1) + projection(self.embed, y, h)


def _check(shape):
    if tuple(shape[1:]) != (32, 32):
        raise ValueError(f"SNGAN ResNet is built for 32x32 images, got {tuple(shape)}; "
                         f"resize the data to 32 (e.g. data.args.size=32)")


def sngan_generator(*, z_dim, out_shape, ch: int = 256, num_classes: int = 0):
    """SNGAN ResNet generator, 32x32 (Miyato et al. 2018); cBN blocks when class-conditional."""
    _check(out_shape)
    return SNGANGenerator(z_dim, out_shape[0], ch, num_classes)


def sngan_discriminator(*, in_shape, ch: int = 128, num_classes: int = 0):
    """SNGAN ResNet discriminator with spectral norm, 32x32 (Miyato et al. 2018); a projection
    discriminator when class-conditional."""
    _check(in_shape)
    return SNGANDiscriminator(in_shape[0], ch, num_classes)


@ganforge.hookimpl
def ganforge_register_generators(register):
    register("sngan", sngan_generator)


@ganforge.hookimpl
def ganforge_register_discriminators(register):
    register("sngan", sngan_discriminator)
