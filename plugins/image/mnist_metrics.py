"""Sample-quality metrics for the MNIST family, in the feature space of a shipped classifier.

The classifier (:mod:`ganforge.plugins.image.mnist_classifier`, >= 99% test accuracy) replaces the
ImageNet Inception network of IS/FID, which neither fits 28x28 digits nor may be downloaded
here. Reported, on ``n`` generated samples against the real MNIST test set:

- ``classifier_score``: exp(E_x KL(p(y|x) || p(y))), the inception score with this classifier
  (10 at best), and ``classifier_score_real``, the same on real test digits, for scale;
- ``frechet_distance``: between Gaussians fitted to the classifier's 128-d penultimate
  features of generated and real test digits (FID's formula);
- ``class_kl``: KL(class histogram of generated digits || uniform) = sum p log(10 p), with
  ``class_<d>`` the share of each digit (mode-collapse diagnostics);
- ``precision`` / ``recall``: Kynkäänniemi et al. 2019, k-nearest-neighbour manifolds (k=3)
  in the same feature space.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from ganforge import hookimpl
from ganforge.plugins.mixture_metrics import kl_to_uniform
from ganforge.plugins.image.mnist_classifier import load_classifier

__all__ = ["classifier_score", "frechet_distance", "frechet_from_stats", "precision_recall"]


def classifier_score(probs: torch.Tensor) -> float:
    probs = probs.double().clamp_min(1e-12)
    marginal = probs.mean(0, keepdim=True)
    return math.exp((probs * (probs.log() - marginal.log())).sum(1).mean().item())


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of two feature sets, in float64."""
    a, b = a.double(), b.double()
    return frechet_from_stats(a.mean(0), torch.cov(a.T), b.mean(0), torch.cov(b.T))


def frechet_from_stats(mu_a: torch.Tensor, s_a: torch.Tensor, mu_b: torch.Tensor, s_b: torch.Tensor) -> float:
    """The Fréchet distance of two Gaussians (means, covariances); (S_a S_b)^(1/2)'s trace is
    taken as that of the symmetric S_a^(1/2) S_b S_a^(1/2), whose eigenvalues are real."""
    mu_a, s_a, mu_b, s_b = mu_a.double(), s_a.double(), mu_b.double(), s_b.double()
    vals, vecs = torch.linalg.eigh(s_a)
    root_a = vecs @ torch.diag(vals.clamp_min(0).sqrt()) @ vecs.T
    middle = torch.linalg.eigvalsh(root_a @ s_b @ root_a).clamp_min(0).sqrt().sum()
    return float((mu_a - mu_b).pow(2).sum() + s_a.trace() + s_b.trace() - 2 * middle)


def _radii(x: torch.Tensor, k: int) -> torch.Tensor:
    d = torch.cdist(x, x)
    return d.kthvalue(k + 1, dim=1).values  # +1: the point itself is at distance 0


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Share of fake samples inside the real k-NN manifold, and of real inside the fake one."""
    real, fake = real.double(), fake.double()
    r_real, r_fake = _radii(real, k), _radii(fake, k)
    precision = (torch.cdist(fake, real) <= r_real.unsqueeze(0)).any(1).double().mean()
    recall = (torch.cdist(real, fake) <= r_fake.unsqueeze(0)).any(1).double().mean()
    return float(precision), float(recall)


class MNISTMetrics:
    def __init__(self, real_test: torch.Tensor, n_real: int, k: int, real_labels: torch.Tensor | None = None,
                 crop: int = 0):
        self.crop = crop  # padded digits (data.args.pad): the centre 28x28 is scored
        self.model = load_classifier()
        g = torch.Generator().manual_seed(0)
        pick = torch.randperm(len(real_test), generator=g)[:n_real]
        self.real_probs, self.real_features = self.embed(real_test[pick])
        self.real_labels = real_labels[pick] if real_labels is not None else None
        self.k = k

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probs, feats = [], []
        for chunk in images.float().split(1000):
            f = self.model.features(chunk)
            feats.append(f)
            probs.append(torch.softmax(self.model.head(f), 1))
        return torch.cat(probs), torch.cat(feats)

    def __call__(self, samples: torch.Tensor, dataset=None, labels: torch.Tensor | None = None) -> dict[str, float]:
        """``labels``: the classes the samples were asked for (conditional runs) add the
        classifier's accuracy against them and the mean per-class Fréchet distance."""
        if self.crop:
            samples = samples[..., self.crop:self.crop + 28, self.crop:self.crop + 28]
        probs, feats = self.embed(samples.clamp(-1, 1))
        conditional = {} if labels is None else self._conditional(probs, feats, labels)
        counts = torch.bincount(probs.argmax(1), minlength=10).double()
        hist = counts / len(probs)
        n = min(len(feats), len(self.real_features))
        precision, recall = precision_recall(self.real_features[:n], feats[:n], self.k)
        return {
            "classifier_score": classifier_score(probs),
            "classifier_score_real": classifier_score(self.real_probs),
            "frechet_distance": frechet_distance(feats, self.real_features),
            "class_kl": kl_to_uniform(counts),
            "precision": precision,
            "recall": recall,
            **{f"class_{d}": float(hist[d]) for d in range(10)},
            **conditional,
        }

    def _conditional(self, probs: torch.Tensor, feats: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        labels = labels.long().cpu()
        out = {"conditional_accuracy": float((probs.argmax(1) == labels).float().mean())}
        if self.real_labels is not None:  # intra-class FD: generated class c against real class c
            fds = [frechet_distance(feats[labels == c], self.real_features[self.real_labels == c])
                   for c in range(10) if (labels == c).sum() > 1 and (self.real_labels == c).sum() > 1]
            if fds:
                out["intra_class_fd"] = sum(fds) / len(fds)
        return out


def mnist_metric(*, dataset, root: str | None = None, n_real: int = 10000, k: int = 3):
    """Classifier score, Fréchet distance, class histogram KL and precision/recall for MNIST."""
    from ganforge.plugins.image.idx import mnist

    root = root or getattr(dataset, "root", None)
    shape = tuple(getattr(dataset, "sample_shape", ()))
    if root is None or len(shape) != 3 or shape[0] != 1 or shape[1] != shape[2] or shape[1] < 28 or shape[1] % 2:
        raise ValueError("needs an MNIST dataset (1x28x28, or padded: data.args.pad) with a data.root holding the "
                         "test files (t10k-*), or args: {root: FOLDER}")
    test = mnist(root=str(Path(root)), download=False, split="test")
    return MNISTMetrics(test.normalize(test.data), n_real, k, test.labels, crop=(shape[1] - 28) // 2)


@hookimpl
def ganforge_register_metrics(register):
    register("mnist", mnist_metric)
