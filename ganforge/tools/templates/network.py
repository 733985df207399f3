"""A ganforge plugin: a network of a system's own kind, here an encoder for the built-in vqgan
system (see docs/writing-plugins.md, "A minimal plugin of each kind" and "Writing a system of
several networks")."""
from torch import nn

import ganforge

GANFORGE_PLUGIN_API = 2  # the plugin API this module was written for


class MyNetwork(nn.Module):
    """Images (N, C, H, W) -> codes (N, code_dim, H / 4, W / 4): two stride-2 convolutions, as
    vqgan's decoder with ``downs: 2`` expects."""

    def __init__(self, in_shape: tuple, code_dim: int, width: int = 16):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(in_shape[0], width, 4, 2, 1), nn.SiLU(),
                                 nn.Conv2d(width, width, 4, 2, 1), nn.SiLU(), nn.Conv2d(width, code_dim, 1))

    def forward(self, x):
        return self.net(x)


def my_network(*, in_shape, code_dim, width: int = 16):
    """A two-convolution image encoder (vqgan's networks.E: {name: my_network})."""
    if in_shape[1] % 4 or in_shape[2] % 4:
        raise ValueError(f"my_network halves the image twice: its sides must be divisible by 4, got {in_shape}")
    return MyNetwork(in_shape, code_dim, width)


@ganforge.hookimpl
def ganforge_register_networks(register):
    register("my_network", my_network)
