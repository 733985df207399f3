"""A ganforge plugin: a generator (see docs/writing-plugins.md, "A minimal plugin of each kind")."""
import math

from torch import nn

import ganforge

GANFORGE_PLUGIN_API = 2  # the plugin API this module was written for


class MyGenerator(nn.Module):
    """Noise ``z`` (N, z_dim) -> N samples of ``out_shape``; images end in tanh ([-1, 1], the
    range ganforge's image datasets use), vectors (the 2-D toy data) are left unbounded."""

    def __init__(self, z_dim: int, out_shape: tuple, hidden: int = 128):
        super().__init__()
        self.out_shape = tuple(out_shape)
        self.net = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, math.prod(out_shape)),
                                 nn.Tanh() if len(out_shape) == 3 else nn.Identity())

    def forward(self, z):
        return self.net(z).view(-1, *self.out_shape)


def my_generator(*, z_dim, out_shape, hidden: int = 128):
    """A one-hidden-layer MLP generator for any sample shape."""
    return MyGenerator(z_dim, out_shape, hidden)


@ganforge.hookimpl
def ganforge_register_generators(register):
    register("my_generator", my_generator)
