"""Images (and labels) from the Hugging Face ``datasets`` library: a local image folder, parquet
files, or a dataset of the Hub (``data.download: true``; offline otherwise).

    data: {name: hf_dataset, root: PATH/images}                          # an image folder (class sub-folders: labels)
    data: {name: hf_dataset, root: PATH/shards, args: {path: parquet}}   # parquet files
    data: {name: hf_dataset, download: true, args: {path: ylecun/mnist}} # the Hub (needs a network)

``load_dataset(path, name, split, data_dir=root)``; the image column is the first with the
``Image`` feature (or ``image_column``), the label column the first ``ClassLabel`` (or
``label_column``; ``label_column: null`` leaves labels out). Every image is converted to
``channels`` (1: L, 3: RGB; default: the first image's), resized and centre-cropped to
``size`` (default: the first image's side) and held in memory as uint8, a
:class:`ganforge.data.TensorDataset`: whole-batch fetches, data on the GPU, the fast path, the
DataLoader's distributed sampler under several processes and exact resume, as for MNIST.
Streaming (datasets larger than memory) is not supported yet.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ganforge import hookimpl
from ganforge.data import TensorDataset
from ganforge.errors import DatasetError


def _columns(features, image_column, label_column):
    from datasets import ClassLabel, Image

    names = list(features)
    if image_column is None:
        image_column = next((n for n in names if isinstance(features[n], Image)), None)
        if image_column is None:
            raise DatasetError(f"no image column (an Image feature) among {', '.join(names)}; name one with "
                               f"data.args.image_column")
    elif image_column not in names:
        raise DatasetError(f"image_column '{image_column}' is not a column; columns: {', '.join(names)}")
    if label_column == "auto":
        label_column = next((n for n in names if isinstance(features[n], ClassLabel)), None)
    elif label_column is not None and label_column not in names:
        raise DatasetError(f"label_column '{label_column}' is not a column; columns: {', '.join(names)}")
    return image_column, label_column


def _to_tensor(images, size, channels):
    """PIL images -> uint8 (N, C, size, size), resized (shorter side) and centre-cropped."""
    from torchvision.transforms.v2 import functional as TF

    mode = "L" if channels == 1 else "RGB"
    out = torch.empty(len(images), channels, size, size, dtype=torch.uint8)
    for i, img in enumerate(images):
        x = TF.pil_to_tensor(img.convert(mode))
        if x.shape[1:] != (size, size):
            x = TF.center_crop(TF.resize(x, [size], antialias=True), [size, size])
        out[i] = x
    return out


def hf_dataset(*, root: str | None = None, download: bool = False, path: str | None = None,
               name: str | None = None, split: str = "train", image_column: str | None = None,
               label_column: str | None = "auto", size: int | None = None, channels: int | None = None,
               limit: int | None = None) -> TensorDataset:
    """Images (and class labels) through Hugging Face ``datasets``: an image folder or parquet
    files under ``data.root``, or a Hub dataset ``path`` (with ``data.download: true``)."""
    try:
        import datasets
    except ImportError:
        raise DatasetError("hf_dataset needs the datasets package: pip install 'datasets>=4,<5'") from None
    if path is None and root is None:
        raise DatasetError("hf_dataset needs data.root (a folder of images or parquet files) or "
                           "data.args.path (a Hub dataset, with data.download: true)")
    if path is None:
        folder = Path(root)
        if not folder.is_dir():
            raise DatasetError(f"data.root {folder} is not a folder")
        path = "parquet" if any(folder.rglob("*.parquet")) else "imagefolder"
    local = path in ("imagefolder", "parquet", "csv", "json", "arrow") or Path(path).exists()
    if not local and not download:
        raise DatasetError(f"hf_dataset: '{path}' is not a local folder or builder; reading it from the Hub needs "
                           f"a network and data.download: true")
    if not download:
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # never reach for the network
    try:
        ds = datasets.load_dataset(path, name, split=split, data_dir=root if local and root else None)
    except (FileNotFoundError, ValueError, datasets.exceptions.DatasetNotFoundError) as err:
        raise DatasetError(f"hf_dataset could not load '{path}' (split {split}"
                           f"{f', data_dir {root}' if root else ''}): {str(err).splitlines()[0]}") from None
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit is a number of samples, >= 1, got {limit}")
        ds = ds.select(range(min(limit, len(ds))))
    if len(ds) == 0:
        raise DatasetError(f"hf_dataset '{path}' split {split} is empty")
    image_column, label_column = _columns(ds.features, image_column, label_column)
    images = ds[image_column]
    first = images[0]
    channels = channels or (1 if first.mode in ("L", "1", "I", "I;16") else 3)
    if channels not in (1, 3):
        raise ValueError(f"channels is 1 (grey) or 3 (RGB), got {channels}")
    size = size or min(first.size)
    data = _to_tensor(images, size, channels)
    if label_column is None:
        return TensorDataset(data)
    labels = torch.as_tensor(np.asarray(ds[label_column]), dtype=torch.long)
    feature = ds.features[label_column]
    classes = len(feature.names) if hasattr(feature, "names") else int(labels.max()) + 1
    return TensorDataset(data, labels, num_classes=classes)


@hookimpl
def ganforge_register_datasets(register):
    register("hf_dataset", hf_dataset)
