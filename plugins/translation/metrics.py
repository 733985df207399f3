"""Metrics for image-to-image translation, on the held-out split.

``translation`` (any translation dataset with known targets: paired data, the MNIST demos):
for each direction a system translates (``AtoB``, and ``BtoA`` for CycleGAN) with known
targets, the mean absolute error ``l1`` (pixels in [0, 1]), ``psnr`` (dB, peak 1) and ``ssim``
(Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03, no padding, averaged
over channels and images) of output against target; and the same for the identity map (the
input itself as the output: ``identity_l1``, ...), the baseline any translation must beat.

``mnist_translation`` (the MNIST demos) adds, with the shipped MNIST classifier (on the 28x28
centre of the 32x32 images): ``class_preserved``, the share of outputs classified as their
input's digit; ``fd``, the Fréchet distance between the classifier features of the outputs
and of real held-out images of the target domain; and both for the identity map.

Both receive the :class:`~ganforge.plugins.translation.Inputs` the samples were made from
(``inputs``) and split the samples by direction: G_AB's outputs first, then G_BA's.
SSIM and PSNR are ours (15 lines): neither torchvision nor the project's dependencies have them.
"""
from __future__ import annotations

import math

import torch

from ganforge import hookimpl

__all__ = ["psnr", "ssim", "split_outputs"]


def _unit(x: torch.Tensor) -> torch.Tensor:
    return (x.double().clamp(-1, 1) + 1) / 2


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03) of
    images in [-1, 1], computed on [0, 1] by torchmetrics."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    _, full = structural_similarity_index_measure(_unit(x), _unit(y), data_range=1.0, reduction="none",
                                                  return_full_image=True)
    # the mean over the windows inside the image (Wang et al.'s and scikit-image's), not over the
    # reflection-padded border torchmetrics' own mean includes
    return full[..., 5:-5, 5:-5].flatten(1).mean(1)


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of images in [-1, 1] (peak 1 on [0, 1]) by torchmetrics; identical
    images: inf."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    return peak_signal_noise_ratio(_unit(x), _unit(y), data_range=1.0, reduction="none", dim=(1, 2, 3))


def split_outputs(samples: torch.Tensor, inputs) -> list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor | None,
                                                              torch.Tensor | None, torch.Tensor | None]]:
    """``(direction, input, output, target, labels, real images of the target domain)`` for each
    direction in ``samples`` (A->B first)."""
    if inputs is None or not hasattr(inputs, "a"):
        raise ValueError("the translation metrics need an image-to-image objective (pix2pix, cyclegan)")
    out, start = [], 0
    for direction, x, target, labels, real in (("AtoB", inputs.a, inputs.target_ab, inputs.labels_a,
                                                inputs.b if inputs.b is not None else inputs.target_ab),
                                               ("BtoA", inputs.b, inputs.target_ba, inputs.labels_b, inputs.a)):
        if x is None or start >= len(samples):
            continue
        out.append((direction, x.cpu(), samples[start:start + len(x)].cpu(), _cpu(target), _cpu(labels), _cpu(real)))
        start += len(x)
    if start != len(samples):
        raise ValueError(f"{len(samples)} samples for {start} inputs: the samples are not these inputs' translations")
    return out


def _cpu(t):
    return None if t is None else t.cpu()


def _pixel_scores(output: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    p = psnr(output, target)
    return {"l1": float((_unit(output) - _unit(target)).abs().mean()),
            "psnr": float(p[torch.isfinite(p)].mean()) if torch.isfinite(p).any() else math.inf,
            "ssim": float(ssim(output, target).mean())}


class Translation:
    def __call__(self, samples, dataset=None, inputs=None) -> dict[str, float]:
        results = {}
        for direction, x, out, target, _, _ in split_outputs(samples, inputs):
            if target is None:
                continue  # unknown (unpaired folders): nothing to compare with
            for prefix, image in (("", out), ("identity_", x)):
                if image.shape != target.shape:  # e.g. a grey input for a colour target
                    continue
                results.update({f"{direction}_{prefix}{k}": v for k, v in _pixel_scores(image, target).items()})
        if not results:
            raise ValueError("no held-out targets to compare with: translation metrics need paired data "
                             "or a dataset that knows the true translation (mnist_edges, mnist_thick)")
        return results


class MNISTTranslation(Translation):
    def __init__(self):
        from ganforge.plugins.image.mnist_classifier import load_classifier

        self.model = load_classifier()

    @torch.no_grad()
    def _embed(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        crop = images.float().clamp(-1, 1)[:, :, 2:30, 2:30]  # the 28x28 digit inside the padding
        feats = torch.cat([self.model.features(c) for c in crop.split(1000)])
        return self.model.head(feats).argmax(1), feats

    def __call__(self, samples, dataset=None, inputs=None) -> dict[str, float]:
        from ganforge.plugins.image.mnist_metrics import frechet_distance

        if tuple(samples.shape[1:]) != (1, 32, 32):
            raise ValueError(f"mnist_translation needs the MNIST demos' 1x32x32 images, got {tuple(samples.shape[1:])}")
        results = super().__call__(samples, dataset, inputs)
        for direction, x, out, _, labels, real in split_outputs(samples, inputs):
            _, real_feats = self._embed(real)
            for prefix, image in (("", out), ("identity_", x)):
                classes, feats = self._embed(image)
                if labels is not None:
                    results[f"{direction}_{prefix}class_preserved"] = float((classes == labels).float().mean())
                if len(feats) > 1 and len(real_feats) > 1:
                    results[f"{direction}_{prefix}fd"] = frechet_distance(feats, real_feats)
        return results


def translation():
    """L1, PSNR and SSIM of translations against held-out targets, and of the identity map."""
    return Translation()


def mnist_translation():
    """translation's scores plus class preserved and Fréchet distance (MNIST classifier), MNIST demos."""
    return MNISTTranslation()


@hookimpl
def ganforge_register_metrics(register):
    register("translation", translation)
    register("mnist_translation", mnist_translation)
