"""The dataset contract: what a dataset plugin may return to buy whole-batch fetches
(:class:`TensorDataset`), and reading samples from any dataset. The engine's loaders and batch
placement are :mod:`ganforge.training.batches`."""
from __future__ import annotations

import warnings
from typing import Any

import torch
from torch.utils.data import Dataset, IterableDataset


__all__ = ["TensorDataset", "batch_collate", "held_out_images", "samples_at", "streams"]


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
        index = torch.as_tensor(indices)
        if self.data.device.type == "cuda":  # from pinned memory, without blocking the host
            return self.fetch(index.pin_memory().to(self.data.device, non_blocking=True))
        return self.fetch(index)


def samples_at(dataset: Any, indices: list[int]) -> torch.Tensor:
    """The samples (without labels) at ``indices`` as one tensor, for any dataset: one
    ``__getitems__`` call for in-memory ones, item by item (collated) for the others."""
    if hasattr(dataset, "__getitems__"):
        items = dataset.__getitems__(indices)
    else:
        from torch.utils.data import default_collate

        items = default_collate([dataset[i] for i in indices])
    return items[0] if isinstance(items, (tuple, list)) else items


def batch_collate(batch: Any) -> Any:
    """collate_fn for datasets that fetch whole batches themselves (``__getitems__``)."""
    return batch


def streams(dataset: Any) -> bool:
    """A dataset that is a stream (``torch.utils.data.IterableDataset``): read in order, shuffled
    by itself per epoch (``set_epoch``), split across processes by itself."""
    return isinstance(dataset, IterableDataset)


def held_out_images(dataset: Any, n: int) -> torch.Tensor:
    """``n`` held-out images of ``dataset``: a float tensor (N, C, H, W) in the data's range
    ([-1, 1] for images), the images alone (no labels): its
    ``held_out_images(n)`` when it has one (MNIST and Fashion-MNIST: the test split beside the
    training files), else its first ``n`` training images, with a warning. A dataset plugin
    offers a held-out split with a method ``held_out_images(n) -> Tensor | None`` (``None``:
    none here); a system that shows or measures what its networks make of data reads it here."""
    own = getattr(dataset, "held_out_images", None)
    if callable(own):
        images = own(n)
        if images is not None:
            return images
    if len(dataset) == 0:  # (an export's stand-in for its data: the facts, no images)
        from ganforge.errors import GanforgeError

        raise GanforgeError(f"{type(dataset).__name__} holds no images: an export holds the networks, not the "
                            f"data; samples made from held-out data need the run itself (ganforge.load_run with its "
                            f"data.root), or call the networks on your own inputs (run.network(NAME))")
    warnings.warn(f"{type(dataset).__name__} has no held-out split (held_out_images): pictures and metrics "
                  f"use its training images", stacklevel=2)
    n = min(n, len(dataset))
    items = [dataset[i] for i in range(n)]
    return torch.stack([it[0] if isinstance(it, (tuple, list)) else it for it in items]).float()
