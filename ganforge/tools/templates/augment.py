"""A ganforge plugin: an augmentation (see docs/writing-plugins.md, "A minimal plugin of each kind")."""
import torch

import ganforge

GANFORGE_PLUGIN_API = 2  # the plugin API this module was written for


class MyAugment:
    """Random horizontal flips of half the images. ganforge calls it on every image batch a
    discriminator sees while training, real and fake, in every phase: ``augment(x, split)``
    with x of shape (N, C, H, W) in [-1, 1]; ``split``, when not None, is the channel count of
    each image held side by side in the channels (pix2pix's pairs, e.g. (1, 3)), which must
    get the same transform."""

    capturable = True  # tensor code only, random numbers from torch's default generator

    def __init__(self, p: float = 0.5):
        if not 0 <= p <= 1:
            raise ValueError(f"my_augment p is a probability, in [0, 1]; got {p}")
        self.p = p

    def __call__(self, x, split=None):
        flip = torch.rand(x.shape[0], 1, 1, 1, device=x.device) < self.p
        return torch.where(flip, x.flip(3), x)  # differentiable: G learns through it


@ganforge.hookimpl
def ganforge_register_augments(register):
    register("my_augment", MyAugment)
