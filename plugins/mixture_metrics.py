"""Mode coverage metrics for the 2-D Gaussian mixtures.

A sample is *high quality* when it lies within 3 sigma of its nearest mean; a mode is
*covered* when at least one high-quality sample has it as nearest mean. The reverse KL of the
mode histogram, sum_i p_i log(K p_i) over the high-quality samples, is 0 when all K modes get
the same share and log K when one mode gets them all.
"""
from __future__ import annotations

import math

import torch

from ganforge import hookimpl

__all__ = ["kl_to_uniform", "mixture_stats"]


def kl_to_uniform(counts: torch.Tensor) -> float:
    """KL(histogram || uniform) = sum_i p_i log(K p_i) of K bin counts (not all zero): 0 for
    even counts, log K for one full bin. The mode-histogram KL of every mode metric."""
    p = counts.double() / counts.sum()
    nz = p[p > 0]
    return float((nz * (nz * len(p)).log()).sum())


def mixture_stats(samples: torch.Tensor, means: torch.Tensor, sigma: float) -> dict[str, float]:
    samples = samples.detach().float().cpu().reshape(len(samples), -1)
    dist = torch.cdist(samples, means.float())
    nearest_dist, nearest = dist.min(1)
    good = nearest_dist <= 3 * sigma
    k = len(means)
    counts = torch.bincount(nearest[good], minlength=k).double()
    n_good = int(good.sum())
    reverse_kl = kl_to_uniform(counts) if n_good else math.log(k)
    return {
        "modes": int((counts > 0).sum()),
        "modes_total": k,
        "high_quality": n_good / max(len(samples), 1),
        "reverse_kl": reverse_kl,
    }


class Mixture:
    def __init__(self, means: torch.Tensor, sigma: float):
        self.means, self.sigma = means, sigma

    def __call__(self, samples: torch.Tensor, dataset=None) -> dict[str, float]:
        return mixture_stats(samples, self.means, self.sigma)


def mixture(*, dataset):
    """Modes covered, % high-quality samples and reverse KL for 2-D Gaussian mixtures."""
    if not hasattr(dataset, "means"):
        raise ValueError("needs a Gaussian-mixture dataset (toy_ring, toy_grid) with known means")
    return Mixture(dataset.means, dataset.sigma)


@hookimpl
def ganforge_register_metrics(register):
    register("mixture", mixture)
