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

With ``streaming: true`` nothing is held in memory: the dataset is read as a stream
(``load_dataset(..., streaming=True)``), shuffled per epoch through a buffer of ``buffer``
examples from ``seed`` and the epoch (``IterableDataset.shuffle`` and ``set_epoch``: the same
order every time for the same epoch), and split across processes with ``split_dataset_by_node``
(each process reads its own share; Accelerate does not re-shard it). A resumed run reads the
current epoch again and passes over the batches it had trained on: exact, at the cost of
re-reading them. Streams are decoded in the training process (no DataLoader workers).
"""
from __future__ import annotations

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
    feature = features[label_column] if label_column is not None else None
    if feature is not None and not isinstance(feature, ClassLabel) and not (
            getattr(feature, "dtype", "").startswith(("int", "uint"))):
        raise DatasetError(f"label_column '{label_column}' holds {getattr(feature, 'dtype', type(feature).__name__)} "
                           f"values, not class indices: make it a ClassLabel (ds = ds.class_encode_column("
                           f"'{label_column}'), then ds.save_to_disk(...)), or set label_column: null")
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


class StreamingImages(torch.utils.data.IterableDataset):
    """A Hugging Face streaming dataset as ganforge's samples: (C, H, W) floats in [-1, 1], with
    the class label when there is a label column; shuffled per epoch, split across processes."""

    def __init__(self, stream, image_column, label_column, size, channels, num_classes, seed, buffer):
        self.stream, self.image_column, self.label_column = stream, image_column, label_column
        self.size, self.channels, self.num_classes = size, channels, num_classes
        self.seed, self.buffer, self.epoch = seed, buffer, 0
        self.sample_shape = (channels, size, size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _share(self):
        """This process's share of this epoch's shuffled stream."""
        import torch.distributed as dist
        from datasets.distributed import split_dataset_by_node

        stream = self.stream.shuffle(seed=self.seed, buffer_size=self.buffer)
        stream.set_epoch(self.epoch)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            stream = split_dataset_by_node(stream, rank=dist.get_rank(), world_size=dist.get_world_size())
        return stream

    def __iter__(self):
        for example in self._share():
            x = _to_tensor([example[self.image_column]], self.size, self.channels)[0].float().div_(127.5).sub_(1.0)
            if self.label_column is None:
                yield x
            else:
                yield x, int(example[self.label_column])


def hf_dataset(*, root: str | None = None, download: bool = False, path: str | None = None,
               name: str | None = None, split: str = "train", image_column: str | None = None,
               label_column: str | None = "auto", size: int | None = None, channels: int | None = None,
               limit: int | None = None, streaming: bool = False, buffer: int = 1000,
               seed: int = 0) -> TensorDataset | StreamingImages:
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
        if (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file():
            return _saved(datasets, folder, split, image_column, label_column, size, channels, limit, streaming,
                          seed, buffer)
        path = "parquet" if any(folder.rglob("*.parquet")) else "imagefolder"
    local = path in ("imagefolder", "parquet", "csv", "json", "arrow") or Path(path).exists()
    if not local and not download:
        raise DatasetError(f"hf_dataset: '{path}' is not a local folder or builder; reading it from the Hub needs "
                           f"a network and data.download: true")
    try:
        ds = datasets.load_dataset(path, name, split=split, data_dir=root if local and root else None,
                                   streaming=streaming)
    except (FileNotFoundError, ValueError, datasets.exceptions.DatasetNotFoundError) as err:
        raise DatasetError(f"hf_dataset could not load '{path}' (split {split}"
                           f"{f', data_dir {root}' if root else ''}): {str(err).splitlines()[0]}") from None
    return _prepared(ds, path, split, image_column, label_column, size, channels, limit, streaming, seed, buffer)


def _saved(datasets, folder: Path, split: str, image_column, label_column, size, channels, limit, streaming, seed,
           buffer) -> TensorDataset | StreamingImages:
    """A folder written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk`` (the usual way
    to keep a prepared dataset), read with ``load_from_disk``; a DatasetDict gives ``split``."""
    try:
        ds = datasets.load_from_disk(str(folder))
    except (FileNotFoundError, ValueError) as err:
        raise DatasetError(f"hf_dataset could not read the saved dataset {folder}: {str(err).splitlines()[0]}") from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DatasetError(f"the saved DatasetDict {folder} has no split '{split}'; its splits: {', '.join(ds)} "
                               f"(set data.args.split)")
        ds = ds[split]
    if streaming:
        ds = ds.to_iterable_dataset()
    return _prepared(ds, str(folder), split, image_column, label_column, size, channels, limit, streaming, seed,
                     buffer)


def _prepared(ds, path, split, image_column, label_column, size, channels, limit, streaming, seed,
              buffer) -> TensorDataset | StreamingImages:
    if streaming:
        return _stream(ds, image_column, label_column, size, channels, limit, seed, buffer)
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


def _stream(ds, image_column, label_column, size, channels, limit, seed, buffer) -> StreamingImages:
    if buffer < 1:
        raise ValueError(f"buffer is the shuffle buffer's size in examples, >= 1, got {buffer}")
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit is a number of samples, >= 1, got {limit}")
        ds = ds.take(limit)
    features = ds.features
    if features is None:  # (some builders know their columns only after the first example)
        raise DatasetError("hf_dataset: this stream does not declare its features; name image_column and "
                           "label_column, or load it without streaming")
    image_column, label_column = _columns(features, image_column, label_column)
    first = next(iter(ds.take(1)), None)
    if first is None:
        raise DatasetError("hf_dataset: the stream is empty")
    img = first[image_column]
    channels = channels or (1 if img.mode in ("L", "1", "I", "I;16") else 3)
    if channels not in (1, 3):
        raise ValueError(f"channels is 1 (grey) or 3 (RGB), got {channels}")
    feature = features[label_column] if label_column else None
    classes = len(feature.names) if feature is not None and hasattr(feature, "names") else None
    if label_column is not None and classes is None:
        raise DatasetError(f"label_column '{label_column}' is not a ClassLabel, so a stream cannot tell how many "
                           f"classes there are; cast it to ClassLabel or set label_column: null")
    return StreamingImages(ds, image_column, label_column, size or min(img.size), channels, classes, seed, buffer)


@hookimpl
def ganforge_register_datasets(register):
    register("hf_dataset", hf_dataset)
