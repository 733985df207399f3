"""A ganforge plugin: a dataset (see docs/writing-plugins.md, "A minimal plugin of each kind")."""
import math

import torch

import ganforge
from ganforge.data import TensorDataset

GANFORGE_PLUGIN_API = 2  # the plugin API this module was written for


def my_dataset(*, root=None, download=False, n: int = 4096, seed: int = 0):
    """Two interleaved half circles ("two moons") in 2-D, generated: no files.

    Returns a ganforge.data.TensorDataset: items are float32 tensors of ``sample_shape`` (2,),
    here with labels (0 or 1) and ``num_classes=2``. Images would be uint8 (N, C, H, W),
    scaled to [-1, 1] on fetch. Held in one tensor, it can live on the GPU and be fetched
    inside the CUDA graph; a dataset read from files is any torch Dataset with
    ``sample_shape`` whose items are tensors in [-1, 1] (or (tensor, label))."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(2, (n,), generator=g)
    angle = torch.rand(n, generator=g) * math.pi
    x = torch.stack([torch.cos(angle) + labels, torch.sin(angle) * (1 - 2 * labels) + 0.5 * labels], 1)
    return TensorDataset(x + 0.05 * torch.randn(n, 2, generator=g), labels, num_classes=2)


@ganforge.hookimpl
def ganforge_register_datasets(register):
    register("my_dataset", my_dataset)
