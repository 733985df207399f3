"""Stacked MNIST: the mode-collapse benchmark of VEEGAN, PacGAN and R3GAN.

Each sample is three independent MNIST digits stacked as the R, G and B channels of one
3x28x28 image, so the data has 10^3 = 1000 modes (one per triple of classes), equally likely.

- ``stacked_mnist`` (dataset): ``size`` stacked images (default 128,000, the papers'), built
  from the MNIST training split (IDX files under ``data.root``) by a fixed random draw of
  three digit indices per image (``seed``). Only the 60,000 digits and the (size, 3) index
  table are held in memory; a batch is one indexing operation, so ``data.on_device`` and the
  CUDA-graph path apply. Labels are the mode, 100 r + 10 g + b.
- ``stacked_mnist`` (metric): reads each channel of each sample with the shipped MNIST
  classifier (>= 99% test accuracy) and reports ``modes``, how many of the 1000 triples occur
  at least once, and ``kl``, KL(mode histogram || uniform) = sum p log(1000 p). Both depend on
  the number of samples: the papers use 26,000 (``log.eval_samples`` / ``ganforge eval
  --n``); with that many draws even perfect samples give KL ~ 999 / (2 * 26000) ~ 0.02, so the
  metric also reports ``modes_real`` / ``kl_real`` for as many stacked *test* digits, and
  ``kl_r``, ``kl_g``, ``kl_b``: each channel's own digit histogram against uniform over 10.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ganforge import hookimpl
from ganforge.data import TensorDataset
from ganforge.plugins.mixture_metrics import kl_to_uniform
from ganforge.plugins.image.mnist_classifier import load_classifier

__all__ = ["StackedMNIST", "mode_histogram", "mode_ids", "mode_metrics", "stack"]

MODES = 1000


def stack(digits: torch.Tensor, labels: torch.Tensor, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Index table (size, 3) of digits drawn independently per channel, and each row's mode."""
    g = torch.Generator().manual_seed(seed)
    index = torch.randint(len(digits), (size, 3), generator=g)
    chosen = labels[index]
    return index, mode_ids(chosen)


class StackedMNIST(TensorDataset):
    """(size, 3, 28, 28) uint8 images assembled from ``digits`` (N, 28, 28) on every fetch."""

    def __init__(self, digits: torch.Tensor, index: torch.Tensor, modes: torch.Tensor):
        super().__init__(index, modes, num_classes=MODES)
        self.digits = digits

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (3, *self.digits.shape[-2:])

    def fetch(self, index):
        x = self.normalize(self.digits[self.data[index]])  # (..., 3, 28, 28)
        return x, self.labels[index]


def stacked_mnist(*, root: str | None, download: bool, size: int = 128_000, seed: int = 0,
                  split: str = "train"):
    """Stacked MNIST (3x28x28, 1000 modes): three independent MNIST digits as R, G, B."""
    from ganforge.plugins.image.idx import mnist

    if size < 1:
        raise ValueError(f"size is a number of stacked images, >= 1, got {size}")
    base = mnist(root=root, download=download, split=split)
    index, modes = stack(base.data[:, 0], base.labels, size, seed)
    dataset = StackedMNIST(base.data[:, 0], index, modes)
    dataset.root = base.root
    return dataset


# ------------------------------------------------------------------ the metric
def mode_histogram(modes: torch.Tensor) -> torch.Tensor:
    return torch.bincount(modes.long().flatten(), minlength=MODES).double()


def mode_ids(digits: torch.Tensor) -> torch.Tensor:
    """(N, 3) digit classes (r, g, b) -> mode ids 100 r + 10 g + b."""
    return digits[:, 0] * 100 + digits[:, 1] * 10 + digits[:, 2]


def mode_metrics(modes: torch.Tensor) -> dict[str, float]:
    """Modes covered (of 1000) and KL(histogram || uniform) of per-sample mode ids; kl_r, kl_g
    and kl_b are each channel's own digit histogram against uniform over 10 (where the joint
    KL comes from: with independent channels it is their sum plus what couples them)."""
    counts = mode_histogram(modes)
    out = {"modes": float((counts > 0).sum()), "kl": kl_to_uniform(counts)}
    per_channel = counts.view(10, 10, 10)
    for name, dims in (("kl_r", (1, 2)), ("kl_g", (0, 2)), ("kl_b", (0, 1))):
        out[name] = kl_to_uniform(per_channel.sum(dims))
    return out


class StackedMNISTMetric:
    def __init__(self, real_test: torch.Tensor, n_real: int):
        self.model = load_classifier()
        # as many stacked test digits as the papers' samples, for scale (their own seed)
        # (each test digit drawn is read once and the stacks index the readings: for 26,000
        # stacks of 10,000 test digits, 8x less work than reading every stack)
        index = torch.randint(len(real_test), (n_real, 3), generator=torch.Generator().manual_seed(1))
        drawn, where = index.unique(return_inverse=True)
        read = self.read(real_test[drawn, None].float().div(127.5).sub(1))
        real = mode_metrics(mode_ids(read[where]))
        self.real = {"modes_real": real["modes"], "kl_real": real["kl"]}

    @torch.no_grad()
    def read(self, digits: torch.Tensor) -> torch.Tensor:
        """The class the classifier reads in each (N, 1, 28, 28) digit in [-1, 1]."""
        return torch.cat([self.model(c).argmax(1) for c in digits.float().clamp(-1, 1).split(500)])

    def classify(self, samples: torch.Tensor) -> torch.Tensor:
        """The mode id (100 r + 10 g + b) the classifier reads in each (N, 3, 28, 28) sample."""
        if samples.ndim != 4 or samples.shape[1] != 3:
            raise ValueError(f"stacked_mnist reads 3-channel samples (N, 3, 28, 28), got {tuple(samples.shape)}")
        return mode_ids(self.read(samples.reshape(-1, 1, *samples.shape[-2:])).view(-1, 3))

    def __call__(self, samples: torch.Tensor, dataset=None) -> dict[str, float]:
        return {**mode_metrics(self.classify(samples.cpu())), **self.real}


def stacked_mnist_metric(*, dataset, root: str | None = None, n_real: int = 26_000):
    """Modes covered (of 1000) and KL to uniform on Stacked MNIST, with the real data's values."""
    from ganforge.plugins.image.idx import mnist

    if n_real < 1:
        raise ValueError(f"n_real is a number of real stacked test images to compare with, >= 1, got {n_real}")
    shape = tuple(getattr(dataset, "sample_shape", ()) or ())
    if shape != (3, 28, 28):  # checked when the run starts, not at its final evaluation
        raise ValueError(f"reads 3-channel 28x28 samples (a stacked_mnist dataset), but this run's data "
                         f"'{type(dataset).__name__}' has samples of shape {shape}; use the mnist metric for MNIST")
    root = root or getattr(dataset, "root", None)
    if root is None:
        raise ValueError("needs the MNIST test files (t10k-*): a stacked_mnist dataset with a data.root, "
                         "or args: {root: FOLDER}")
    test = mnist(root=str(Path(root)), download=False, split="test")
    return StackedMNISTMetric(test.data[:, 0], n_real)


@hookimpl
def ganforge_register_datasets(register):
    register("stacked_mnist", stacked_mnist)


@hookimpl
def ganforge_register_metrics(register):
    register("stacked_mnist", stacked_mnist_metric)
