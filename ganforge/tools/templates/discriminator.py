"""A ganforge plugin: a discriminator (see docs/writing-plugins.md, "A minimal plugin of each kind")."""
import math

from torch import nn

import ganforge

GANFORGE_PLUGIN_API = 2  # the plugin API this module was written for


class MyDiscriminator(nn.Module):
    """Samples (N, *in_shape) -> one logit per sample, shape (N,) or (N, 1): no sigmoid (the
    loss applies what it needs)."""

    def __init__(self, in_shape: tuple, hidden: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(in_shape), hidden), nn.LeakyReLU(0.2),
                                 nn.Linear(hidden, 1))

    def forward(self, x):
        return self.net(x)


def my_discriminator(*, in_shape, hidden: int = 128):
    """A one-hidden-layer MLP discriminator for any sample shape."""
    return MyDiscriminator(in_shape, hidden)


@ganforge.hookimpl
def ganforge_register_discriminators(register):
    register("my_discriminator", my_discriminator)
