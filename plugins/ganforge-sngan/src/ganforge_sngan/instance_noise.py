"""Instance noise as a ganforge augmentation (the ``augment`` part kind, plugin API 2).

Sønderby, Caballero, Theis, Shi, Huszár, "Amortised MAP Inference for Image Super-resolution"
(ICLR 2017), and Arjovsky & Bottou, "Towards Principled Methods for Training GANs" (ICLR 2017):
Gaussian noise added to every image the discriminator sees, real and fake, makes the two
distributions overlap, so D cannot separate them perfectly and G keeps getting gradients.
ganforge applies an augmentation to every discriminator input while training (both phases, and
the penalties differentiate through it); this one needs nothing but the transform.
"""
from __future__ import annotations

import torch

import ganforge

GANFORGE_PLUGIN_API = 2


class InstanceNoise:
    """x + std * N(0, I) on every image a discriminator sees while training."""

    capturable = True  # tensor code only, random numbers from torch's default generator

    def __init__(self, std: float = 0.1):
        if not std >= 0:
            raise ValueError(f"instance_noise std is a standard deviation, >= 0; got {std}")
        self.std = std

    def __call__(self, x: torch.Tensor, groups: int = 1) -> torch.Tensor:
        return x + self.std * torch.randn_like(x)  # (the same kind of transform for images side by side)


@ganforge.hookimpl
def ganforge_register_augments(register):
    register("instance_noise", InstanceNoise, "Gaussian instance noise on every image D sees (Sønderby et al. 2017)")
