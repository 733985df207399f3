"""Latent walks: ``ganforge sample RUN --interpolate K --out walks.png``.

Each row walks the noise space in K steps from one random point to another. Gaussian noise is
interpolated spherically (slerp, White 2016): a straight line between two Gaussian vectors
passes near the origin, where the noise has almost no mass, so its midpoints look unlike any
sample; the great circle keeps the norm typical. For class-conditional runs every walk is
shown once per class, the same z path in each row, so one sees the class change and the
style stay. Other parts of the noise (InfoGAN's codes) stay at the walk's start.
"""
from __future__ import annotations

from typing import Any

import torch

from ganforge.errors import GanforgeError

__all__ = ["latent_walks", "slerp"]


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between rows of ``a`` and ``b`` at fractions ``t`` (K,):
    (N, D), (N, D) -> (N, K, D). Falls back to a straight line for (anti)parallel rows."""
    a, b, t = a.double(), b.double(), t.double().view(1, -1, 1)
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)
    omega = cos.clamp(-1, 1).acos().view(-1, 1, 1)
    sin = omega.sin()
    line = (1 - t) * a[:, None] + t * b[:, None]
    arc = ((1 - t) * omega).sin() / sin.clamp_min(1e-12) * a[:, None] + (t * omega).sin() / sin.clamp_min(1e-12) * b[:, None]
    return torch.where(sin.abs() < 1e-6, line, arc).float()


def latent_walks(system: Any, walks: int, steps: int, generator: torch.Generator) -> tuple[Any, int]:
    """Generator inputs for ``walks`` walks of ``steps`` points, row by row, and the row length."""
    if steps < 2:
        raise GanforgeError(f"--interpolate needs at least 2 points per walk, got {steps}")
    start, end = system.noise(walks, "cpu", generator), system.noise(walks, "cpu", generator)
    if not torch.is_tensor(start) and not (isinstance(start, tuple) and torch.is_tensor(start[0])):
        audio = getattr(getattr(system, "dataset", None), "sample_kind", None) == "audio" or callable(
            getattr(system, "vocode", None))
        raise GanforgeError("--interpolate walks a noise vector; this run's generator takes no noise: "
                            + ("a vocoder turns mel spectrograms into audio (use ganforge vocode RUN)" if audio
                               else "an image-to-image run translates images (use ganforge translate RUN)"))
    t = torch.linspace(0, 1, steps)
    if torch.is_tensor(start):
        return slerp(start, end, t).reshape(-1, start.shape[1]), steps
    z = slerp(start[0], end[0], t)  # (walks, steps, D)
    classes = getattr(system, "num_classes", 0)
    if classes and len(start) == 2:  # conditional: each walk once per class, the same z path
        z = z.repeat_interleave(classes, 0)  # (walks * classes, steps, D)
        y = torch.arange(classes).repeat(walks).repeat_interleave(steps)
        return (z.reshape(-1, z.shape[-1]), y.to(start[1].dtype)), steps
    rest = tuple(x.repeat_interleave(steps, 0) for x in start[1:])
    return (z.reshape(-1, z.shape[-1]), *rest), steps
