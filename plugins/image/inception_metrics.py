"""FID, IS and KID with the standard Inception network, for any image dataset.

The numbers papers report (FID: Heusel et al. 2017; IS: Salimans et al. 2016; KID: Bińkowski
et al. 2018) are only comparable when computed with *the* Inception: TensorFlow's 2015-12-05
graph, including its resize. We take it from **torch-fidelity** (Obukhov et al.), which ports
those weights and that resize bit-exactly into PyTorch, computes all three metrics (pytorch-fid
only has FID), and reads weights from a path (clean-fid insists on downloading them).

``inception`` (metric), reported on the generated samples against ``n_real`` real images of
the run's dataset:

- ``fid``: Fréchet distance between Gaussians fitted to the 2048-d pool features (our float64
  implementation, shared with the MNIST metrics; a test checks it against torch-fidelity's);
- ``is`` / ``is_std``: the inception score over ``splits`` splits (torch-fidelity's);
- ``kid`` / ``kid_std``: the unbiased polynomial-kernel MMD^2 over ``kid_subsets`` subsets of
  ``kid_subset_size`` (torch-fidelity's).

**Weights.** Nothing is downloaded unless ``download: true``. The weights file
``weights-inception-2015-12-05-6726825d.pth`` is taken from ``weights: FILE``, else
``$GANFORGE_INCEPTION_WEIGHTS``, else torch's hub cache (``<torch.hub.get_dir()>/checkpoints``,
where torch-fidelity itself caches it); when none has it, the metric stops with one line that
says where to put which file.

**Reference statistics** of the real images (mean and covariance, and up to 10,000 features
for KID) are computed once and cached in ``<data.root>/.ganforge-stats/`` (or
``~/.cache/ganforge/stats`` when the data has no writable root), keyed by a fingerprint of the
real images chosen, their number and the feature network.

Published numbers use 50,000 samples (``ganforge eval RUN --n 50000``); FID is biased upwards
at fewer, so compare runs at the same count.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from ganforge import hookimpl
from ganforge.data import samples_at
from ganforge.errors import GanforgeError
from ganforge.plugins.image.mnist_metrics import frechet_from_stats

__all__ = ["InceptionMetrics", "find_weights", "inception_features", "inception_score", "kid", "to_uint8_rgb"]

WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + WEIGHTS_FILE
KID_FEATURES = 10_000
Features = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # uint8 RGB -> (pool, logits)


def find_weights(path: str | None = None, download: bool = False) -> Path | None:
    """The Inception weights file; ``None`` means torch-fidelity may download it."""
    hub = Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE
    explicit = path or os.environ.get("GANFORGE_INCEPTION_WEIGHTS")
    if explicit:
        if not Path(explicit).expanduser().is_file():
            raise GanforgeError(f"Inception weights not found at {explicit}: no such file. Set the metric's "
                                f"args: {{weights: FILE}} (or GANFORGE_INCEPTION_WEIGHTS) to {WEIGHTS_FILE}")
        return Path(explicit).expanduser()
    if hub.is_file():
        return hub
    if download:
        return None
    raise GanforgeError(
        f"FID/IS/KID need the standard Inception weights, which are not on this machine: download "
        f"{WEIGHTS_URL} and put it at {hub} (or anywhere, with the metric's args: {{weights: FILE}} "
        f"or GANFORGE_INCEPTION_WEIGHTS=FILE), or allow the download with args: {{download: true}}")


def inception_features(weights: Path | None, device: str | torch.device = "cpu") -> Features:
    """torch-fidelity's Inception: uint8 RGB images of any size -> (2048-d pool, 1008 logits)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                      feature_extractor_weights_path=str(weights) if weights else None)
    net = net.to(device)

    def features(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pool, logits = net(images.to(device))
        return pool.cpu(), logits.cpu()

    features.tag = f"inception-2015-12-05:{weights.name if weights else WEIGHTS_FILE}"  # the cache key's
    return features


def to_uint8_rgb(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] (N, 1 or 3, H, W) -> uint8 RGB, as the metrics' networks take them."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"FID/IS/KID take grey or RGB images (N, 1|3, H, W), got {tuple(images.shape)}")
    x = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def inception_score(logits: torch.Tensor, splits: int = 10) -> tuple[float, float]:
    from torch_fidelity.metric_isc import isc_features_to_metric

    out = isc_features_to_metric(logits, splits=splits)
    return out["inception_score_mean"], out["inception_score_std"]


def kid(real: torch.Tensor, fake: torch.Tensor, subsets: int = 100, subset_size: int = 1000) -> tuple[float, float]:
    from torch_fidelity.metric_kid import kid_features_to_metric

    size = min(subset_size, len(real), len(fake))
    out = kid_features_to_metric(real.double(), fake.double(), kid_subsets=subsets, kid_subset_size=size,
                                 kid_kernel="poly", kid_kernel_poly_degree=3, kid_kernel_poly_gamma=None,
                                 kid_kernel_poly_coef0=1, rng_seed=2020, verbose=False)
    return out["kernel_inception_distance_mean"], out["kernel_inception_distance_std"]


def real_batches(dataset: Any, n: int, batch: int = 200) -> Iterator[torch.Tensor]:
    """``n`` real images of a dataset (a fixed random choice), in [-1, 1], batch by batch."""
    pick = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:n]
    for chunk in pick.split(batch):
        yield samples_at(dataset, chunk.tolist()).cpu()


class InceptionMetrics:
    """FID, IS and KID of samples against real images, in any feature network's space."""

    def __init__(self, features: Features, real: Callable[[], Iterator[torch.Tensor]], *, n_real: int,
                 cache_dir: Path | None, splits: int = 10, kid_subsets: int = 100, kid_subset_size: int = 1000):
        self.features, self.splits = features, splits
        self.kid_subsets, self.kid_subset_size = kid_subsets, kid_subset_size
        self.real = self._reference(real, n_real, cache_dir)

    @torch.no_grad()
    def embed(self, batches: Iterator[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        pools, logits = [], []
        for images in batches:
            pool, logit = self.features(to_uint8_rgb(images))
            pools.append(pool.double())
            logits.append(logit.double())
        return torch.cat(pools), torch.cat(logits)

    def _reference(self, real, n_real: int, cache_dir: Path | None) -> dict[str, torch.Tensor]:
        batches = real()
        first = next(batches)
        tag = getattr(self.features, "tag", type(self.features).__name__)
        key = hashlib.sha1(to_uint8_rgb(first).numpy().tobytes() + f"{n_real}|{tag}".encode()).hexdigest()[:16]
        path = cache_dir / f"inception-{key}.safetensors" if cache_dir else None
        if path is not None and path.is_file():
            from safetensors.torch import load_file

            return load_file(str(path))
        pool, _ = self.embed(_chain(first, batches))
        stats = {"mu": pool.mean(0), "sigma": torch.cov(pool.T), "features": pool[:KID_FEATURES].float().contiguous()}
        if path is not None:
            _save(stats, path)
        return stats

    def __call__(self, samples: torch.Tensor, dataset: Any = None) -> dict[str, float]:
        pool, logits = self.embed(iter(samples.cpu().split(200)))
        score, score_std = inception_score(logits, self.splits)
        kid_mean, kid_std = kid(self.real["features"], pool.float(), self.kid_subsets, self.kid_subset_size)
        fid = frechet_from_stats(pool.mean(0), torch.cov(pool.T), self.real["mu"], self.real["sigma"])
        return {"fid": fid,
                "is": score, "is_std": score_std, "kid": kid_mean, "kid_std": kid_std}


def _chain(first: torch.Tensor, rest: Iterator[torch.Tensor]) -> Iterator[torch.Tensor]:
    yield first
    yield from rest


def _save(stats: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    save_file({k: v.contiguous() for k, v in stats.items()}, str(partial))
    partial.replace(path)  # never a half-written cache


def cache_dir_for(dataset: Any) -> Path:
    root = getattr(dataset, "root", None)
    if root and os.access(root, os.W_OK):
        return Path(root) / ".ganforge-stats"
    return Path.home() / ".cache" / "ganforge" / "stats"


def inception_metric(*, dataset, weights: str | None = None, download: bool = False, n_real: int = 50_000,
                     splits: int = 10, kid_subsets: int = 100, kid_subset_size: int = 1000,
                     device: str | None = None):
    """FID, IS and KID with the standard Inception weights (torch-fidelity)."""
    shape = tuple(getattr(dataset, "sample_shape", ()))
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise ValueError(f"FID/IS/KID need an image dataset (1 or 3 channels), this one gives samples of shape {shape}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    features = inception_features(find_weights(weights, download), device)
    n_real = min(n_real, len(dataset))
    return InceptionMetrics(features, lambda: real_batches(dataset, n_real), n_real=n_real,
                            cache_dir=cache_dir_for(dataset), splits=splits, kid_subsets=kid_subsets,
                            kid_subset_size=kid_subset_size)


@hookimpl
def ganforge_register_metrics(register):
    register("inception", inception_metric)
