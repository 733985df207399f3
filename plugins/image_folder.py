"""Any folder of images (searched recursively), resized and centre-cropped to a square.

Not held in memory: images are decoded by DataLoader workers (``data.num_workers``) through
torchvision transforms, so it suits datasets of any size.
"""
from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms

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
        self.transform = transforms.Compose([
            transforms.Resize(size), transforms.CenterCrop(size), transforms.ToTensor(),
            transforms.Normalize([0.5] * channels, [0.5] * channels),
        ])

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        with Image.open(self.files[index]) as img:
            return self.transform(img.convert(self.mode))


def image_folder(*, root: str | None, size: int = 64, channels: int = 3):
    """Images from a folder (recursive), resized and centre-cropped to size x size."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels}")
    if not root:
        raise DatasetError("dataset 'image_folder' needs data.root=FOLDER (a folder of images)")
    if not Path(root).is_dir():
        raise DatasetError(f"data.root {root} is not a folder; point it at a folder of images")
    return ImageFolder(Path(root), size, channels)


@hookimpl
def ganforge_register_datasets(register):
    register("image_folder", image_folder)
