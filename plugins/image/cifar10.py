"""CIFAR-10 from its python batches (``cifar-10-batches-py``) in a local folder.

The batches are Python pickles, the format the dataset ships in. They are read with a restricted
unpickler that builds only what the format holds (dicts, lists, strings, bytes, numbers and
numpy arrays) and refuses anything else, so a crafted file cannot run code. With
``data.download=true`` torchvision downloads them first. Images are held in memory as
uint8, optionally resized once at load time (``size: 64`` for a DCGAN at 64x64).
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from ganforge import hookimpl
from ganforge.data import TensorDataset
from ganforge.errors import DatasetError

SPLITS = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}

#: the only globals a CIFAR-10 batch needs: numpy's array reconstruction (numpy 1 and 2 paths)
_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"), ("builtins", "bytearray"),
            ("_codecs", "encode")}  # protocol-2 pickles from Python 3 encode bytes with it (harmless)


class _BatchUnpickler(pickle.Unpickler):
    """Builds dicts, lists, strings, numbers and numpy arrays; any other global is refused
    before it can be called."""

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to load {module}.{name}: a CIFAR-10 batch holds only arrays, "
                                     f"lists and strings (the file may be malicious)")


def load_batch(path: Path) -> dict:
    """One python batch of CIFAR-10, read without running code from the file."""
    with open(path, "rb") as f:
        return _BatchUnpickler(f, encoding="latin1").load()


def cifar10(*, root: str | None, download: bool, split: str = "train", size: int = 32,
            limit: int | None = None):
    """CIFAR-10 (Krizhevsky 2009), 3x32x32 (or resized), from the python batches."""
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got '{split}'")
    if limit is not None and limit < 1:
        raise ValueError(f"limit is a number of samples, >= 1, got {limit}")
    folder = Path(root) if root else Path("data") / "cifar10"
    if download:
        import torchvision.datasets as tvd

        tvd.CIFAR10(str(folder), train=(split == "train"), download=True)
    candidates = [folder / "cifar-10-batches-py", folder]
    base = next((c for c in candidates if all((c / n).is_file() for n in SPLITS[split])), None)
    partial = next((c for c in candidates if any((c / n).is_file() for n in SPLITS[split])), None)
    if base is None and partial is not None:
        missing = [n for n in SPLITS[split] if not (partial / n).is_file()]
        raise DatasetError(f"CIFAR-10 {split} batches in {partial} are incomplete: {', '.join(missing)} "
                           f"{'is' if len(missing) == 1 else 'are'} missing; copy the whole cifar-10-batches-py "
                           f"folder again (or data.download=true)")
    if base is None:
        raise DatasetError(
            f"CIFAR-10 {split} batches not found: looked in {' and '.join(map(str, candidates))} "
            f"for {', '.join(SPLITS[split])}. Set data.root to the folder holding "
            f"cifar-10-batches-py, or data.download=true to let torchvision fetch it"
        )
    arrays, labels = [], []
    for name in SPLITS[split]:
        try:
            entry = load_batch(base / name)
            arrays.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.extend(entry["labels"])
        except Exception as err:  # noqa: BLE001 - any damage to the file is the same problem
            raise DatasetError(f"{base / name}: not a CIFAR-10 batch ({err})") from None
    data = torch.from_numpy(np.concatenate(arrays))
    if limit is not None:
        data, labels = data[:limit], labels[:limit]
    if size != 32:
        from torchvision.transforms.v2.functional import resize

        data = torch.cat([resize(chunk, [size, size], antialias=True) for chunk in data.split(4096)])
    return TensorDataset(data, torch.tensor(labels, dtype=torch.int64), num_classes=10)


@hookimpl
def ganforge_register_datasets(register):
    register("cifar10", cifar10)
