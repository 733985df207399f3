"""The file formats that the engine's commands and the built-in datasets both read: image files
(which suffixes count, and opening one with a one-line error) and MNIST's IDX files (finding
them in a folder, parsing them).

The IDX parser is ours (20 lines) because torchvision's reader takes neither .gz files nor a
flat folder; it checks the header and the file size, so a truncated file is a clear error.
Images are opened with PIL, as torchvision's folder datasets do.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from PIL import Image

from ganforge.errors import DatasetError

__all__ = ["IMAGE_EXTENSIONS", "find_idx_files", "image_files", "open_image", "read_idx"]

#: The suffixes (lower case) of the files an image folder is made of.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")


def image_files(folder: Path) -> list[Path]:
    """The image files under ``folder`` (searched recursively), sorted by path."""
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def open_image(path: Path | str, mode: str) -> Image.Image:
    """The image at ``path`` in ``mode`` ("L" or "RGB"); an unreadable file (truncated, not an
    image) is a :class:`DatasetError` naming it."""
    try:
        with Image.open(path) as img:
            return img.convert(mode)
    except (OSError, SyntaxError, ValueError) as err:  # PIL: unidentified, truncated, broken
        raise DatasetError(f"{path}: cannot read this image ({err})") from None


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
