"""Any folder of images (searched recursively), resized and centre-cropped to a square.

Not held in memory: images are decoded by DataLoader workers (``data.num_workers``) through
torchvision transforms, so it suits datasets of any size. With ``args: {classes: true}`` the
folder is read in torchvision's ImageFolder layout, one sub-folder per class (sorted names are
classes 0, 1, ...), and items are ``(image, label)``: the data of a class-conditional GAN.
"""
from __future__ import annotations

import functools
import warnings
from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision import datasets, transforms

from ganforge import hookimpl
from ganforge.data import IMAGE_EXTENSIONS, image_files, open_image
from ganforge.errors import DatasetError

EXTENSIONS = IMAGE_EXTENSIONS  # (the name this module has always exported)
MAX_SKIPS = 10  # unreadable images in a row before a folder is judged broken


def load_skipping(count: int, index: int, load, path_of) -> object:
    """``load(index)``; an unreadable image is skipped with a warning naming it (the next index
    is used instead), so one damaged file in a large folder does not end a run. After
    ``MAX_SKIPS`` unreadable images in a row the folder is judged broken: one clear error.
    ``path_of(i)``: the file of item i, for that error."""
    for k in range(MAX_SKIPS):
        try:
            return load((index + k) % count)
        except DatasetError as err:
            warnings.warn(f"{err}; skipped, using the next image")
    raise DatasetError(f"{MAX_SKIPS} unreadable images in a row from {path_of(index)}: is data.root a folder "
                       f"of images? Remove or replace the damaged files")


class ImageFolder(Dataset):
    def __init__(self, root: Path, size: int, channels: int):
        self.files = image_files(root)
        if not self.files:
            raise DatasetError(
                f"no images found under {root} (looked recursively for "
                f"{', '.join(IMAGE_EXTENSIONS)}); set data.root to a folder of images"
            )
        self.mode = "L" if channels == 1 else "RGB"
        self.sample_shape = (channels, size, size)
        self.transform = _transform(size, channels)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        return load_skipping(len(self.files), index, lambda i: self.transform(open_image(self.files[i], self.mode)),
                             self.files.__getitem__)


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
                             loader=functools.partial(open_image, mode=mode), allow_empty=False)
        except FileNotFoundError as err:
            raise DatasetError(f"data.root {root} is not in the one-sub-folder-per-class layout that "
                               f"args.classes=true needs ({err})") from None
        self.sample_shape = (channels, size, size)
        self.num_classes = len(self.classes)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return load_skipping(len(self.samples), index, super().__getitem__, lambda i: self.samples[i][0])


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
