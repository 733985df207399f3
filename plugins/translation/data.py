"""Datasets for image-to-image translation: pix2pix's and CycleGAN's folder layouts, and two
offline demos made from the MNIST files.

- ``paired_folder``: pix2pix's aligned format. Every image is A|B, the two halves side by side
  (width = 2 x height), in ``<root>/train`` (held out: ``val``, else ``test``). Training
  images get pix2pix's jitter: both halves resized to ``load_size``, the same random
  ``size`` crop and the same random horizontal flip. ``direction: BtoA`` swaps the halves.
- ``unpaired_folder``: CycleGAN's ``trainA``/``trainB`` (held out: ``testA``/``testB``), any
  number of images in each; the same jitter on each image. Item i is A[i mod |A|] with B[p(i
  mod |B|)] for a fixed random permutation p: batches of B are as random as the shuffled
  batches of A, and every image of both domains is seen each epoch.
- ``mnist_edges`` (paired): the outer edge of each digit (pixels its 3x3 dilation adds) -> the
  digit, 32x32 (MNIST padded by 2, so the U-Net's power-of-two rule holds).
- ``mnist_thick`` (unpaired): digits (A) <-> digits with thickened strokes (B, a 3x3 dilation).
  A and B come from disjoint halves of the training set, so no pair exists; the held-out split
  (from the test set) knows each image's true counterpart, for the metrics.

Every translation dataset yields ``(a, b)`` or ``(a, b, labels)`` and has ``input_shape``
(A), ``sample_shape`` (B), ``paired`` and ``evaluation()`` (see
:mod:`ganforge.plugins.translation`). The MNIST demos are held in memory as one uint8 tensor
(``data``: N x 2 x C x H x W, A and B), so ``data.on_device`` and the CUDA-graph path apply.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from ganforge import hookimpl
from ganforge.errors import DatasetError
from ganforge.data import IMAGE_EXTENSIONS, image_files, open_image as _open
from ganforge.plugins.image.image_folder import load_skipping
from ganforge.plugins.translation import Inputs

__all__ = ["PairedFolder", "PairedTensors", "UnpairedFolder", "dilate", "edges"]

DIRECTIONS = ("AtoB", "BtoA")


# ------------------------------------------------------------------ the MNIST demos
def dilate(x: torch.Tensor) -> torch.Tensor:
    """3x3 grey-level dilation (thicker strokes), any dtype."""
    return F.max_pool2d(x.float(), 3, 1, 1).to(x.dtype)


def edges(x: torch.Tensor) -> torch.Tensor:
    """The outer edge of the strokes: what a 3x3 dilation adds (uint8 in, uint8 out)."""
    return (dilate(x).int() - x.int()).clamp(0, 255).to(torch.uint8)


class PairedTensors(Dataset):
    """A and B images in memory: ``data`` (N, 2, C, H, W) uint8, item i = (A_i, B_i, label_i)."""

    def __init__(self, data: torch.Tensor, labels: torch.Tensor, held_out: Inputs, paired: bool):
        self.data, self.labels, self.held_out, self.paired = data, labels, held_out, paired
        self.num_classes = 10

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape[2:])

    input_shape = sample_shape

    def __len__(self) -> int:
        return len(self.data)

    def fetch(self, index: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Tensor ops only (the fast path captures it): A, B in [-1, 1] and the labels."""
        a, b = self.data[index].float().div(127.5).sub(1.0).unbind(-4)
        return a, b, self.labels[index]

    def __getitem__(self, index: int):
        return self.fetch(index)

    def __getitems__(self, indices: list[int]):
        return self.fetch(torch.as_tensor(indices, device=self.data.device))

    def evaluation(self) -> Inputs:
        return self.held_out


def _scaled(x: torch.Tensor) -> torch.Tensor:
    return x.float().div(127.5).sub(1.0)


def _digits(root: str | None, split: str, limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST digits padded to 32x32 (uint8) and their labels."""
    from ganforge.plugins.image.idx import mnist

    ds = mnist(root=root, download=False, split=split, limit=limit)
    return F.pad(ds.data, (2, 2, 2, 2)), ds.labels


def mnist_edges(*, root: str | None, limit: int | None = None, eval_limit: int = 1000):
    """Paired demo from the MNIST files: a digit's outer edge (A) -> the digit (B), 32x32."""
    x, y = _digits(root, "train", limit)
    tx, ty = _digits(root, "test", eval_limit)
    held = Inputs(a=_scaled(edges(tx)), target_ab=_scaled(tx), labels_a=ty)
    return PairedTensors(torch.stack([edges(x), x], 1), y, held, paired=True)


def mnist_thick(*, root: str | None, limit: int | None = None, eval_limit: int = 1000):
    """Unpaired demo from the MNIST files: digits (A) <-> thick-stroke digits (B) from disjoint halves."""
    x, y = _digits(root, "train", limit)
    if len(x) < 2:
        raise DatasetError("mnist_thick needs at least 2 training digits (one per domain)")
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    half = len(x) // 2
    a_idx, b_idx = order[:half], order[half:2 * half]
    tx, ty = _digits(root, "test", 2 * eval_limit)
    th = len(tx) // 2
    held = Inputs(a=_scaled(tx[:th]), target_ab=_scaled(dilate(tx[:th])), labels_a=ty[:th],
                  b=_scaled(dilate(tx[th:2 * th])), target_ba=_scaled(tx[th:2 * th]), labels_b=ty[th:2 * th])
    data = torch.stack([x[a_idx], dilate(x[b_idx])], 1)
    dataset = PairedTensors(data, y[a_idx], held, paired=False)
    dataset.labels_b = y[b_idx]
    return dataset


# ------------------------------------------------------------------ folders
class _Jitter:
    """pix2pix/CycleGAN preprocessing: resize to ``load_size``, a random ``size`` crop and a
    random horizontal flip (the same for every image of one item); held-out: resize to ``size``."""

    def __init__(self, size: int, load_size: int | None, flip: bool, train: bool):
        if load_size is not None and load_size < size:
            raise ValueError(f"load_size ({load_size}) must be >= size ({size}): images are resized to "
                             f"load_size, then cropped to size")
        self.size, self.load, self.flip, self.train = size, load_size or size, flip, train

    def __call__(self, *images: Image.Image) -> list[torch.Tensor]:
        load = self.load if self.train else self.size
        out = [TF.to_dtype(TF.to_image(TF.resize(im, [load, load])), torch.float32, scale=True) for im in images]
        if self.train and load > self.size:
            i, j = (int(v) for v in torch.randint(load - self.size + 1, (2,)))
            out = [t[:, i:i + self.size, j:j + self.size] for t in out]
        if self.train and self.flip and torch.rand(()) < 0.5:
            out = [t.flip(-1) for t in out]
        return [t.mul(2).sub(1) for t in out]


def _mode(channels: int) -> str:
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels}")
    return "L" if channels == 1 else "RGB"


def _folder(root: str | None, name: str) -> Path:
    if not root:
        raise DatasetError(f"dataset '{name}' needs data.root=FOLDER")
    if not Path(root).is_dir():
        raise DatasetError(f"data.root {root} is not a folder")
    return Path(root)


class PairedFolder(Dataset):
    paired = True

    def __init__(self, root: Path, split: str, size: int, load_size: int | None, channels: int, direction: str,
                 flip: bool, train: bool, eval_limit: int = 200):
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be AtoB or BtoA, got '{direction}'")
        self.root, self.mode, self.direction, self.eval_limit = root, _mode(channels), direction, eval_limit
        self.args = (size, load_size, channels, direction, flip)
        folder = root / split
        self.files = image_files(folder) if folder.is_dir() else []
        if not self.files:
            raise DatasetError(f"no images in {folder}: paired_folder reads pix2pix's layout, A|B images "
                               f"(two halves side by side) in {root}/train, and val or test")
        for path in self.files:  # the header only: cheap, and a bad file is named now, not mid-run
            try:
                with Image.open(path) as img:
                    w, h = img.size
            except (OSError, SyntaxError) as err:
                raise DatasetError(f"{path}: cannot read this image ({err}); remove or replace it") from None
            if w != 2 * h:
                raise DatasetError(f"{path} is {w}x{h}, not an A|B pair: paired_folder needs each image to be "
                                   f"A and B side by side, twice as wide as high")
        self.jitter = _Jitter(size, load_size, flip, train)
        self.sample_shape = self.input_shape = (channels, size, size)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return load_skipping(len(self.files), index, self._pair, self.files.__getitem__)

    def _pair(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = _open(self.files[index], self.mode)
        w, h = img.size
        a, b = img.crop((0, 0, w // 2, h)), img.crop((w // 2, 0, w, h))
        if self.direction == "BtoA":
            a, b = b, a
        return tuple(self.jitter(a, b))

    def evaluation(self) -> Inputs:
        """The first ``eval_limit`` pairs of ``val`` (else ``test``, else this split), unjittered."""
        for split in ("val", "test"):
            if image_files(self.root / split):
                break
        else:
            warnings.warn(f"{self.root} has no val or test folder: pictures and metrics use training images")
            split = "train"
        size, load, channels, direction, flip = self.args
        held = PairedFolder(self.root, split, size, load, channels, direction, flip, train=False)
        pairs = [held[i] for i in range(min(len(held), self.eval_limit))]
        return Inputs(a=torch.stack([p[0] for p in pairs]), target_ab=torch.stack([p[1] for p in pairs]))


class UnpairedFolder(Dataset):
    paired = False

    def __init__(self, root: Path, size: int, load_size: int | None, channels: int, flip: bool, eval_limit: int = 200):
        self.root, self.mode, self.eval_limit = root, _mode(channels), eval_limit
        self.files = {}
        for d in ("A", "B"):
            folder = root / f"train{d}"
            if not folder.is_dir():
                raise DatasetError(f"{folder} is missing: unpaired_folder reads CycleGAN's layout, "
                                   f"{root}/trainA and {root}/trainB (and testA, testB)")
            self.files[d] = image_files(folder)
            if not self.files[d]:
                raise DatasetError(f"no images in {folder} (looked for {', '.join(IMAGE_EXTENSIONS)})")
        self.jitter = _Jitter(size, load_size, flip, train=True)
        self.still = _Jitter(size, None, False, train=False)
        order = torch.randperm(len(self.files["B"]), generator=torch.Generator().manual_seed(0)).tolist()
        self.b_files = [self.files["B"][i] for i in order]  # B in a fixed random order
        self.sample_shape = self.input_shape = (channels, size, size)

    def __len__(self) -> int:
        return max(len(self.files["A"]), len(self.files["B"]))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        a_files, b_files = self.files["A"], self.b_files
        a = load_skipping(len(a_files), index % len(a_files), lambda i: self.jitter(_open(a_files[i], self.mode))[0],
                          a_files.__getitem__)
        b = load_skipping(len(b_files), index % len(b_files), lambda i: self.jitter(_open(b_files[i], self.mode))[0],
                          b_files.__getitem__)
        return a, b

    def evaluation(self) -> Inputs:
        """The first ``eval_limit`` images of testA and testB (else of trainA and trainB)."""
        found = {d: image_files(self.root / f"test{d}") for d in ("A", "B")}
        if not (found["A"] and found["B"]):
            warnings.warn(f"{self.root} has no testA/testB images: pictures and metrics use training images")
            found = self.files
        load = [torch.stack([self.still(_open(p, self.mode))[0] for p in found[d][:self.eval_limit]]) for d in "AB"]
        return Inputs(a=load[0], b=load[1])


def paired_folder(*, root: str | None, split: str = "train", size: int = 256, load_size: int | None = 286,
                  channels: int = 3, direction: str = "AtoB", flip: bool = True, eval_limit: int = 200):
    """pix2pix's aligned A|B images (train/val/test), with its jitter (resize 286, crop 256, flip)."""
    return PairedFolder(_folder(root, "paired_folder"), split, size, load_size, channels, direction, flip,
                        train=True, eval_limit=eval_limit)


def unpaired_folder(*, root: str | None, size: int = 256, load_size: int | None = 286, channels: int = 3,
                    flip: bool = True, eval_limit: int = 200):
    """CycleGAN's trainA/trainB (testA/testB) folders, with its jitter (resize 286, crop 256, flip)."""
    return UnpairedFolder(_folder(root, "unpaired_folder"), size, load_size, channels, flip, eval_limit)


@hookimpl
def ganforge_register_datasets(register):
    register("paired_folder", paired_folder)
    register("unpaired_folder", unpaired_folder)
    register("mnist_edges", mnist_edges)
    register("mnist_thick", mnist_thick)
