"""Generated datasets (no files): 2-D Gaussian mixtures, the standard mode-collapse
benchmarks, and small images for image-only parts.

- ``toy_ring``: 8 Gaussians on a circle of radius 1 at angles 2*pi*k/8, sigma 0.01;
- ``toy_grid``: 25 Gaussians with means {-4, -2, 0, 2, 4}^2, sigma 0.05;
- ``toy_blobs``: 1x16x16 images of one bright Gaussian blob at one of 3x3 places (the label),
  jittered by up to a pixel: the smallest image data, for trying augmentations and image
  networks on any machine.

Each dataset carries ``means`` and ``sigma`` so that the ``mixture`` metric can score samples.
"""
from __future__ import annotations

import math

import torch

from ganforge import hookimpl
from ganforge.data import TensorDataset

__all__ = ["MixtureDataset", "grid_means", "ring_means"]


class MixtureDataset(TensorDataset):
    def __init__(self, means: torch.Tensor, sigma: float, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        labels = torch.randint(len(means), (n,), generator=g)
        points = means[labels] + sigma * torch.randn(n, 2, generator=g)
        super().__init__(points, labels, num_classes=len(means))
        self.means, self.sigma = means, sigma


def ring_means(k: int = 8, radius: float = 1.0) -> torch.Tensor:
    angles = torch.arange(k, dtype=torch.float64) * (2 * math.pi / k)
    return torch.stack([radius * angles.cos(), radius * angles.sin()], 1).float()


def grid_means() -> torch.Tensor:
    axis = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0])
    return torch.cartesian_prod(axis, axis)


def toy_ring(*, n: int = 100_000, seed: int = 0, modes: int = 8, radius: float = 1.0,
             sigma: float = 0.01):
    """8 Gaussians on a ring (radius 1, sigma 0.01), generated."""
    return MixtureDataset(ring_means(modes, radius), sigma, n, seed)


def toy_grid(*, n: int = 100_000, seed: int = 0, sigma: float = 0.05):
    """25 Gaussians on a 5x5 grid (means {-4,-2,0,2,4}^2, sigma 0.05), generated."""
    return MixtureDataset(grid_means(), sigma, n, seed)


def toy_blobs(*, n: int = 4096, seed: int = 0, size: int = 16, sigma: float = 1.5):
    """Images of a Gaussian blob at one of 3x3 places (1 x size x size, uint8), generated."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(9, (n,), generator=g)
    centre = (torch.stack([labels // 3, labels % 3], 1).float() + 0.5) * (size / 3)
    centre = centre + (torch.rand(n, 2, generator=g) * 2 - 1)
    axis = torch.arange(size).float() + 0.5
    dy, dx = axis[None, :] - centre[:, :1], axis[None, :] - centre[:, 1:]
    blob = torch.exp(-(dy[:, :, None] ** 2 + dx[:, None, :] ** 2) / (2 * sigma ** 2))
    return TensorDataset((blob * 255).round().to(torch.uint8)[:, None], labels, num_classes=9)


@hookimpl
def ganforge_register_datasets(register):
    register("toy_ring", toy_ring)
    register("toy_grid", toy_grid)
    register("toy_blobs", toy_blobs)
