"""GAN inversion into StyleGAN2's W (or W+) by optimisation, as stylegan2-ada-pytorch's
``projector.py`` does it, written anew: w starts at ``w_avg``; Adam (lr 0.1, betas (0.9, 0.999))
with a learning rate ramped up over the first 5% of the steps and down (cosine) over the last
25%; Gaussian noise of ``0.05 x w_std`` added to w, fading to nothing by 75% of the steps; the
per-layer noise maps are optimised too, renormalised after every step and kept uncorrelated by
StyleGAN2's noise regulariser (autocorrelation at shifts of one pixel, at every scale, weight 1e5).
All images of a batch are projected at once, each with its own w.

The distance. StyleGAN2 uses LPIPS on VGG16 features, whose weights cannot be downloaded on an
offline machine. Three that can be computed here:

- ``discriminator`` (default): the run's own discriminator's feature maps (after the first layer
  and after each block), each unit-normalised over its channels (as LPIPS normalises VGG's), the
  squared differences averaged per layer and summed, plus the pixels' mean squared error. A
  trained D's features are tuned to exactly these images, and it is there for every run;
- ``mnist``: the same on the shipped MNIST classifier's convolutional features (digits only;
  padded digits are cropped to their centre 28x28), plus the pixels';
- ``pixels``: the mean squared error of the pixels alone, the baseline.

``tests/test_stylegan2.py`` checks each piece; ``benchmarks/RESULTS.md`` measures the three.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DISTANCES", "noise_regularizer", "project"]

DISTANCES = ("discriminator", "mnist", "pixels")


def _normalized(f: torch.Tensor) -> torch.Tensor:
    return f / (f.square().sum(dim=1, keepdim=True) + 1e-10).sqrt()


def feature_distance(features: Callable[[torch.Tensor], list[torch.Tensor]]) -> Callable:
    """A distance per image: the pixels' mean squared error plus, per feature layer, the mean
    squared difference of the channel-normalised features."""
    def distance(x: torch.Tensor, target_features: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        d = (x - target).square().flatten(1).mean(1)
        for a, b in zip(features(x), target_features, strict=True):
            d = d + (_normalized(a) - b).square().flatten(1).mean(1)
        return d
    return distance


def _discriminator_features(D: nn.Module) -> Callable[[torch.Tensor], list[torch.Tensor]]:
    if not hasattr(D, "blocks") or not hasattr(D, "fromrgb"):
        raise ValueError("distance 'discriminator' needs StyleGAN2's discriminator (discriminator: stylegan2); "
                         "use distance pixels")

    def features(x: torch.Tensor) -> list[torch.Tensor]:
        out = [D.fromrgb(x)]
        for block in D.blocks:
            out.append(block(out[-1]))
        return [f.float() for f in out]
    return features


def _mnist_features(shape: tuple[int, ...]) -> Callable[[torch.Tensor], list[torch.Tensor]]:
    from ganforge.plugins.image.mnist_classifier import load_classifier

    if shape[0] != 1 or shape[1] < 28:
        raise ValueError(f"distance 'mnist' scores digits (1 x 28 x 28, or padded); this run makes {shape}")
    model = load_classifier()
    for p in model.parameters():
        p.requires_grad_(False)
    crop = (shape[1] - 28) // 2
    layers = list(model.features)

    def features(x: torch.Tensor) -> list[torch.Tensor]:
        x = x[..., crop:crop + 28, crop:crop + 28].float()
        out = []
        for layer in layers[:10]:  # the convolutions (and pools): 28x28x32, 14x14x64 feature maps
            x = layer(x)
            if isinstance(layer, nn.ReLU):
                out.append(x)
        return out
    return features


def noise_regularizer(maps: list[torch.Tensor]) -> torch.Tensor:
    """StyleGAN2's projector: for each noise map, at every scale down to 8x8, the squared mean
    products with itself shifted by one pixel across and down (0 for white noise)."""
    total = maps[0].new_zeros(())
    for n in maps:
        n = n[None, None] if n.dim() == 2 else n
        while True:
            total = total + (n * torch.roll(n, 1, dims=3)).mean().square() + (n * torch.roll(n, 1, dims=2)).mean().square()
            if n.shape[2] <= 8:
                break
            n = F.avg_pool2d(n, 2)
    return total


def project(G: nn.Module, targets: torch.Tensor, *, steps: int = 1000, w_plus: bool = False,
            distance: str = "discriminator", D: nn.Module | None = None, c: torch.Tensor | None = None,
            frames: int = 20, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], list[float]]:
    """Project ``targets`` (N, C, R, R) in [-1, 1] into G's W (``w_plus``: W+, one w per layer).
    Returns ``(ws (N, num_ws, w_dim), reconstructions (N, C, R, R), frames, distances)``:
    ``frames`` reconstructions taken evenly along the optimisation (for a film), and the final
    distance of each image. G and D are left as they were."""
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {', '.join(DISTANCES)}, got '{distance}'")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    device = targets.device
    gen = torch.Generator().manual_seed(seed)
    layers = [m for m in G.synthesis.modules() if hasattr(m, "noise_const")]
    G_params = [p.requires_grad for p in G.parameters()]
    for p in G.parameters():
        p.requires_grad_(False)
    try:
        with torch.no_grad():  # w's statistics (StyleGAN2: 10,000 samples)
            z = torch.randn(10000, G.mapping.z_dim, generator=gen).to(device)
            cz = c[:1].expand(10000) if c is not None else None
            w_samples = G.mapping(z, cz)[:, :1].float()
            w_avg = w_samples.mean(0, keepdim=True)  # (1, 1, w_dim)
            w_std = ((w_samples - w_avg).square().sum() / 10000).sqrt().item()
        n, num_ws = len(targets), G.num_ws
        w_opt = w_avg.repeat(n, num_ws if w_plus else 1, 1).clone().requires_grad_(True)
        noise = [torch.randn(n, 1, *m.noise_const.shape, generator=gen).to(device).requires_grad_(True) for m in layers]
        feats = None if distance == "pixels" else (_discriminator_features(D) if distance == "discriminator"
                                                   else _mnist_features(tuple(targets.shape[1:])))
        dist = feature_distance(feats) if feats is not None else (lambda x, _f, t: (x - t).square().flatten(1).mean(1))
        with torch.no_grad():
            target_features = [_normalized(f) for f in feats(targets.float())] if feats is not None else []
        opt = torch.optim.Adam([w_opt, *noise], betas=(0.9, 0.999), lr=0.1)
        film, every = [], max(1, steps // max(frames, 1))
        for step in range(steps):
            t = step / steps
            noise_scale = w_std * 0.05 * max(0.0, 1.0 - t / 0.75) ** 2
            lr = 0.1 * min(1.0, t / 0.05) * (0.5 - 0.5 * math.cos(min(1.0, (1.0 - t) / 0.25) * math.pi))
            for group in opt.param_groups:
                group["lr"] = lr
            w = w_opt + torch.randn(w_opt.shape, generator=gen).to(device) * noise_scale
            ws = w if w_plus else w.repeat(1, num_ws, 1)
            x = G.synthesis(ws, "const", noise)
            d = dist(x.float(), target_features, targets.float())
            loss = d.sum() + 1e5 * noise_regularizer(noise)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():  # the noise maps renormalised: zero mean, unit variance
                for nz in noise:
                    nz.sub_(nz.mean(dim=[1, 2, 3], keepdim=True)).div_(nz.square().mean(dim=[1, 2, 3], keepdim=True).sqrt())
            if step % every == 0 or step == steps - 1:
                film.append(x.detach().cpu())
        with torch.no_grad():
            ws = w_opt if w_plus else w_opt.repeat(1, num_ws, 1)
            final = G.synthesis(ws.detach(), "const", noise)
            distances = dist(final.float(), target_features, targets.float()).tolist()
        return ws.detach(), final.detach(), film, distances
    finally:
        for p, flag in zip(G.parameters(), G_params, strict=True):
            p.requires_grad_(flag)
