"""Any folder of images (searched recursively), resized and centre-cropped to a square.

Not held in memory: images are decoded by DataLoader workers (``data.num_workers``) through
torchvision transforms, so it suits datasets of any size. With ``args: {classes: true}`` the
folder is read in torchvision's ImageFolder layout, one sub-folder per class (sorted names are
classes 0, 1, ...), and items are ``(image, label)``: the data of a class-conditional GAN.
"""
from __future__ import annotations

import functools
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import datasets, transforms

from ganforge import hookimpl
from ganforge.errors import DatasetError

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")


class ImageFolder(Dataset):
    def __init__(self, root: Path, size: int, channels: int):
        self.files = sorted(p for p in root.rglob("*") if p.suffix.lower() in EXTENSIONS)
        if not self.files:
            raise DatasetError(
                f"no images found under {root} (looked recursively for "
                f"{', '.join(EXTENSIONS)}); set data.root to a folder of images"
            )
        self.mode = "L" if channels == 1 else "RGB"
        self.sample_shape = (channels, size, size)
        self.transform = _transform(size, channels)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(_open(self.files[index], self.mode))


def _open(path: str, mode: str) -> Image.Image:
    with Image.open(path) as img:
        return img.convert(mode)


def _transform(size: int, channels: int):
    return transforms.Compose([
        transforms.Resize(size), transforms.CenterCrop(size), transforms.ToTensor(),
        transforms.Normalize([0.5] * channels, [0.5] * channels),
    ])


class ClassFolder(datasets.ImageFolder):
    """torchvision's ImageFolder (one sub-folder per class), resized and cropped like
    :class:`ImageFolder`; ``num_classes`` and ``sample_shape`` for ganforge."""

    def __init__(self, root: Path, size: int, channels: int):
        mode = "L" if channels == 1 else "RGB"
        try:
            super().__init__(str(root), transform=_transform(size, channels),
                             loader=functools.partial(_open, mode=mode), allow_empty=False)
        except FileNotFoundError as err:
            raise DatasetError(f"data.root {root} is not in the one-sub-folder-per-class layout that "
                               f"args.classes=true needs ({err})") from None
        self.sample_shape = (channels, size, size)
        self.num_classes = len(self.classes)


def image_folder(*, root: str | None, size: int = 64, channels: int = 3, classes: bool = False):
    """Images from a folder (recursive), resized and centre-cropped to size x size; with
    classes: true, one sub-folder per class and (image, label) items."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels}")
    if not root:
        raise DatasetError("dataset 'image_folder' needs data.root=FOLDER (a folder of images)")
    if not Path(root).is_dir():
        raise DatasetError(f"data.root {root} is not a folder; point it at a folder of images")
    if classes:
        return ClassFolder(Path(root), size, channels)
    return ImageFolder(Path(root), size, channels)


@hookimpl
def ganforge_register_datasets(register):
    register("image_folder", image_folder)
