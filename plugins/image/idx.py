"""MNIST and Fashion-MNIST from their IDX files.

Reads ``train-images-idx3-ubyte`` / ``train-labels-idx1-ubyte`` (and ``t10k-*`` for the test
split), gzip-compressed (``.gz``) or raw, from ``data.root`` itself (a flat folder, as the
original distribution ships them) or from torchvision's layout ``<root>/MNIST/raw`` (or
``FashionMNIST/raw``). With ``data.download=true`` torchvision downloads them into that layout
first; otherwise nothing is ever downloaded. The images are held in memory as uint8.

The IDX parser is ours (20 lines) because torchvision's reader takes neither .gz files nor a
flat folder; it checks the header and the file size, so a truncated file is a clear error.
"""
from __future__ import annotations

import functools
import gzip
from pathlib import Path

import numpy as np
import torch

from ganforge import hookimpl
from ganforge.data import TensorDataset
from ganforge.errors import DatasetError

__all__ = ["find_idx_files", "read_idx"]

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file of unsigned bytes (.gz or raw) into an array of its declared shape."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise DatasetError(f"{path}: cannot read IDX file ({err}); the file is damaged") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DatasetError(f"{path}: not an IDX file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    expected = offset + int(np.prod(dims))
    if len(raw) != expected:
        raise DatasetError(
            f"{path}: header says {dims} values ({expected} bytes) but the file has {len(raw)} "
            f"bytes; the file is truncated or damaged"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def find_idx_files(root: Path, subdir: str, split: str) -> tuple[Path, Path]:
    folders = [root, root / subdir / "raw", root / "raw"]
    found = []
    for stem in FILES[split]:
        for folder in folders:
            hits = [folder / f"{stem}{ext}" for ext in (".gz", "") if (folder / f"{stem}{ext}").is_file()]
            if hits:
                found.append(hits[0])
                break
        else:
            if found:  # one of the two is there: say which one is missing
                raise DatasetError(
                    f"{subdir} {split} file {stem}[.gz] is missing: found {found[0]} but not its "
                    f"partner in {', '.join(str(f) for f in folders)}. Copy it next to {found[0].name}")
            raise DatasetError(
                f"{subdir} {split} files not found: looked in {', '.join(str(f) for f in folders)} "
                f"for {' and '.join(n + '[.gz]' for n in FILES[split])}. Set data.root to the "
                f"folder that holds them, or data.download=true to let torchvision fetch them"
            )
    return found[0], found[1]


def _load(name: str, subdir: str, torchvision_cls: str, root: str | None, download: bool,
          split: str, limit: int | None, pad: int = 0) -> TensorDataset:
    if split not in FILES:
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
