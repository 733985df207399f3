"""Dataset helpers shared by the dataset plugins."""
from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset


class TensorDataset(Dataset):
    """A dataset held in memory as one tensor (plus optional labels).

    ``uint8`` images (N, C, H, W) are kept as bytes (a quarter of the memory) and scaled to
    [-1, 1] when a batch is fetched; float data (toy vectors) is returned as stored. The engine
    fetches whole batches with one indexing operation (``__getitems__``) instead of stacking
    single items.
    """

    def __init__(self, data: torch.Tensor, labels: torch.Tensor | None = None, *,
                 num_classes: int | None = None):
        if labels is not None and len(labels) != len(data):
            raise ValueError(f"{len(data)} samples but {len(labels)} labels")
        self.data = data
        self.labels = labels
        self.num_classes = num_classes

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape[1:])

    def __len__(self) -> int:
        return len(self.data)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            return x.float().div_(127.5).sub_(1.0)
        return x

    def fetch(self, index: Any) -> Any:
        """The samples (and labels) at ``index``: an int, or a tensor of indices on the data's
        device. Only tensor operations, so the fast path captures it in a CUDA graph."""
        x = self.normalize(self.data[index])
        if self.labels is None:
            return x
        return x, self.labels[index]

    def __getitem__(self, index: int) -> Any:
        return self.fetch(index)

    def __getitems__(self, indices: list[int]) -> Any:
        # A whole batch in one indexing operation (on the device holding the data); the
        # DataLoader's collate_fn is the identity.
        return self.fetch(torch.as_tensor(indices, device=self.data.device))


def batch_collate(batch: Any) -> Any:
    """collate_fn for datasets that fetch whole batches themselves (``__getitems__``)."""
    return batch
