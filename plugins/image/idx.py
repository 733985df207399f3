"""MNIST and Fashion-MNIST from their IDX files.

Reads ``train-images-idx3-ubyte`` / ``train-labels-idx1-ubyte`` (and ``t10k-*`` for the test
split), gzip-compressed (``.gz``) or raw, from ``data.root`` itself (a flat folder, as the
original distribution ships them) or from torchvision's layout ``<root>/MNIST/raw`` (or
``FashionMNIST/raw``). With ``data.download=true`` torchvision downloads them into that layout
first; otherwise nothing is ever downloaded. The images are held in memory as uint8.

The IDX parser and the file finder are ``ganforge.data``'s (re-exported here),
shared with ``ganforge bench``'s reference loop.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from ganforge import hookimpl
from ganforge.data import TensorDataset, find_idx_files, read_idx
from ganforge.errors import DatasetError

__all__ = ["find_idx_files", "read_idx"]


def _load(name: str, subdir: str, torchvision_cls: str, root: str | None, download: bool,
          split: str, limit: int | None, pad: int = 0) -> TensorDataset:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got '{split}'")
    folder = Path(root) if root else Path("data") / name
    if download:
        import torchvision.datasets as tvd

        getattr(tvd, torchvision_cls)(str(folder), train=(split == "train"), download=True)
    images_path, labels_path = find_idx_files(folder, subdir, split)
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DatasetError(
            f"{images_path} ({images.shape}) and {labels_path} ({labels.shape}) do not match: "
            f"expected N x H x W images and N labels"
        )
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit is a number of samples, >= 1, got {limit}")
        images, labels = images[:limit], labels[:limit]
    if not isinstance(pad, int) or isinstance(pad, bool) or pad < 0:
        raise ValueError(f"pad is a number of pixels >= 0 added on each side, got {pad!r}")
    data = torch.nn.functional.pad(torch.from_numpy(images.copy()).unsqueeze(1), (pad,) * 4)  # N, 1, H, W uint8
    dataset = TensorDataset(data, torch.from_numpy(labels.astype(np.int64)), num_classes=10)
    dataset.root = str(folder)  # metrics find the test split beside the training files
    if split == "train":  # (a system's held-out images: vqgan's reconstructions)
        dataset.held_out_images = functools.partial(_test_images, subdir, str(folder), pad)
    return dataset


def _test_images(subdir: str, folder: str, pad: int, n: int) -> torch.Tensor | None:
    """The first ``n`` images of the test split beside the training files, as float in [-1, 1]
    (N, 1, H, W); ``None`` when that split is not there."""
    try:
        images_path, _ = find_idx_files(Path(folder), subdir, "test")
    except DatasetError:
        return None
    images = torch.nn.functional.pad(torch.from_numpy(read_idx(images_path)[:n].copy()).unsqueeze(1), (pad,) * 4)
    return images.float().div(127.5).sub(1.0)


def mnist(*, root: str | None, download: bool, split: str = "train", limit: int | None = None, pad: int = 0):
    """MNIST digits (LeCun et al.), 1x28x28, from IDX files (.gz or raw); pad: black pixels
    added on each side (2: 32x32, for networks of power-of-two sizes such as StyleGAN2)."""
    return _load("mnist", "MNIST", "MNIST", root, download, split, limit, pad)


def fashion_mnist(*, root: str | None, download: bool, split: str = "train",
                  limit: int | None = None, pad: int = 0):
    """Fashion-MNIST (Xiao et al.), 1x28x28, from IDX files (.gz or raw); pad: black pixels on each side."""
    return _load("fashion_mnist", "FashionMNIST", "FashionMNIST", root, download, split, limit, pad)


@hookimpl
def ganforge_register_datasets(register):
    register("mnist", mnist)
    register("fashion_mnist", fashion_mnist)
