"""Augmentations of what discriminators see: DiffAugment and ADA (the ``augment`` part kind).

The engine applies the recipe's augmentation to every image a discriminator judges while
training, real and fake, in every phase (:mod:`ganforge.training.augment_hooks`); both are differentiable, so
G learns through them and penalties differentiate through them.

- ``diffaugment`` (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN
  Training"): ``policy`` of ``color`` (brightness, saturation, contrast), ``translation``
  (1/8 of the size, zero padding) and ``cutout`` (a square of half the size), on every image.
- ``ada`` (Karras et al. 2020, StyleGAN2-ADA): each transform applied to each image with
  probability ``p``, and ``p`` adapted every ``interval`` steps from the overfitting heuristic
  r_t = E[sign(D(real))]: up when r_t > ``target`` (0.6), down when below, by
  (real images judged) / (``kimg`` x 1000). The pipeline is a subset of StyleGAN2-ADA's
  ``bgc``: x-flip, 90-degree rotations, integer translation, isotropic scaling, rotation,
  anisotropic scaling and fractional translation (composed into one affine map, resampled once
  bilinearly with reflection padding, where StyleGAN2-ADA uses a windowed filter), then
  brightness, contrast and saturation. StyleGAN2-ADA's luma flip and hue rotation (RGB only)
  and its filtering and noise groups are not included. ``p`` and r_t are logged (``ada_p``,
  ``ada_rt``), checkpointed, and agree across processes (the statistics are summed over them).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ganforge import hookimpl

__all__ = ["ADA", "DiffAugment"]


def _rand(x: torch.Tensor, *shape: int) -> torch.Tensor:
    return torch.rand(x.shape[0], *shape, device=x.device, dtype=torch.float32)


def _images(x: torch.Tensor, split: tuple[int, ...] | None) -> list[torch.Tensor]:
    """The images side by side in x's channels (``split``: their channel counts; None: one)."""
    return [x] if split is None else list(torch.split(x, list(split), dim=1))


def _brightness(x, split):
    return x + (_rand(x, 1, 1, 1) - 0.5).to(x.dtype)


def _saturation(x, split):
    factor = (_rand(x, 1, 1, 1) * 2).to(x.dtype)  # one draw per sample: its images alike
    out = []
    for g in _images(x, split):
        mean = g.mean(dim=1, keepdim=True)
        out.append((g - mean) * factor + mean)
    return torch.cat(out, 1) if len(out) > 1 else out[0]


def _contrast(x, split):
    factor = (_rand(x, 1, 1, 1) + 0.5).to(x.dtype)
    out = []
    for g in _images(x, split):
        mean = g.mean(dim=(1, 2, 3), keepdim=True)
        out.append((g - mean) * factor + mean)
    return torch.cat(out, 1) if len(out) > 1 else out[0]


def _translation(x, split, ratio: float = 0.125):
    """Shift each image by up to ``ratio`` of its size (whole pixels), zeros coming in."""
    n, c, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    tx = torch.randint(-sh, sh + 1, (n, 1), device=x.device)
    ty = torch.randint(-sw, sw + 1, (n, 1), device=x.device)
    rows = torch.arange(h, device=x.device)[None, :] - tx  # source row of each output row
    cols = torch.arange(w, device=x.device)[None, :] - ty
    inside = (((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :])
    index = (rows.clamp(0, h - 1)[:, :, None] * w + cols.clamp(0, w - 1)[:, None, :]).reshape(n, 1, h * w)
    moved = x.reshape(n, c, h * w).gather(2, index.expand(n, c, h * w)).reshape(n, c, h, w)
    return moved * inside[:, None].to(x.dtype)


def _cutout(x, split, ratio: float = 0.5):
    """Zero one square of ``ratio`` of the size at a random place in each image."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = torch.randint(0, h + (1 - ch % 2), (n, 1), device=x.device) - ch // 2
    left = torch.randint(0, w + (1 - cw % 2), (n, 1), device=x.device) - cw // 2
    i, j = torch.arange(h, device=x.device)[None, :], torch.arange(w, device=x.device)[None, :]
    cut = (((i >= top) & (i < top + ch))[:, :, None] & ((j >= left) & (j < left + cw))[:, None, :])
    return x * (~cut)[:, None].to(x.dtype)


POLICIES: dict[str, list[Callable]] = {"color": [_brightness, _saturation, _contrast],
                                       "translation": [_translation], "cutout": [_cutout]}


class DiffAugment:
    """DiffAugment's transforms, each on every image (see the module docstring)."""

    capturable = True  # tensor code only, fixed shapes: the fast path may capture it

    def __init__(self, policy: str = "color,translation,cutout"):
        names = [p.strip() for p in policy.split(",") if p.strip()]
        unknown = [p for p in names if p not in POLICIES]
        if unknown or not names:
            raise ValueError(f"diffaugment policy {policy!r}: unknown {', '.join(unknown) or 'empty policy'}; "
                             f"choose from {', '.join(POLICIES)} (comma-separated)")
        self.ops = [op for p in names for op in POLICIES[p]]

    def __call__(self, x: torch.Tensor, split: tuple[int, ...] | None = None) -> torch.Tensor:
        for op in self.ops:
            x = op(x, split)
        return x


class ADA:
    """Adaptive discriminator augmentation (see the module docstring)."""

    capturable = True
    adaptive = True

    def __init__(self, target: float = 0.6, interval: int = 4, kimg: float = 500.0, p: float = 0.0,
                 translate: float = 0.125, scale_std: float = 0.2, aniso_std: float = 0.2,
                 brightness_std: float = 0.2, contrast_std: float = 0.5, saturation_std: float = 1.0):
        if not 0 < target < 1:
            raise ValueError(f"ada target is the E[sign(D(real))] to hold, in (0, 1); got {target}")
        if interval < 1 or kimg <= 0:
            raise ValueError(f"ada interval (steps, >= 1) and kimg (> 0) set how fast p moves; got {interval}, {kimg}")
        if not 0 <= p <= 1:
            raise ValueError(f"ada p is a probability, in [0, 1]; got {p}")
        self.target, self.interval, self.kimg = target, interval, kimg
        self.translate, self.scale_std, self.aniso_std = translate, scale_std, aniso_std
        self.brightness_std, self.contrast_std, self.saturation_std = brightness_std, contrast_std, saturation_std
        self.p = torch.tensor(float(p))
        self.rt = torch.zeros(())
        self.stats = torch.zeros(2)  # sum of sign(D(real)), number of real images, since the last update

    def _to(self, device: torch.device) -> None:
        if self.p.device != device:
            self.p, self.rt, self.stats = self.p.to(device), self.rt.to(device), self.stats.to(device)

    # ------------------------------------------------------------------ the transforms
    def _chance(self, x: torch.Tensor) -> torch.Tensor:
        """Which images get a transform: each with probability p."""
        return _rand(x) < self.p

    def _geometry(self, x: torch.Tensor) -> torch.Tensor:
        """Every geometric transform composed into one 2x3 map (output -> input coordinates).
        The maps, the grid and the resample are computed in fp32 with autocast off (under bf16
        autocast ``affine_grid`` would multiply in bf16 and blur every image, as StyleGAN2-ADA
        also avoids), and an image no transform fired for is returned as it was, bit for bit."""
        with torch.autocast(x.device.type, enabled=False):
            return self._geometry_fp32(x)

    def _geometry_fp32(self, x: torch.Tensor) -> torch.Tensor:
        n, dev = x.shape[0], x.device
        fired = torch.zeros(n, dtype=torch.bool, device=dev)
        eye = torch.eye(3, device=dev).expand(n, 3, 3)

        def mat(a, b, c, d, tx, ty):
            m = torch.zeros(n, 3, 3, device=dev)
            m[:, 0, 0], m[:, 0, 1], m[:, 0, 2], m[:, 1, 0], m[:, 1, 1], m[:, 1, 2] = a, b, tx, c, d, ty
            m[:, 2, 2] = 1
            return m

        one, zero = torch.ones(n, device=dev), torch.zeros(n, device=dev)

        def maybe(m):
            nonlocal fired
            chosen = self._chance(x)
            fired = fired | chosen
            return torch.where(chosen[:, None, None], m, eye)

        flip = 1 - 2 * torch.floor(_rand(x) * 2)
        k = torch.floor(_rand(x) * 4) * (math.pi / 2)
        h, w = x.shape[2], x.shape[3]
        u = _rand(x, 2) * 2 - 1  # whole pixels, in the [-1, 1] units of the grid (a pixel is 2 / size)
        t_int = torch.stack([torch.round(u[:, 0] * self.translate * w) * (2 / w),
                             torch.round(u[:, 1] * self.translate * h) * (2 / h)], 1)
        s = torch.exp2(torch.randn(n, device=dev) * self.scale_std)
        theta = (_rand(x) * 2 - 1) * math.pi
        a = torch.exp2(torch.randn(n, device=dev) * self.aniso_std)
        t_frac = torch.randn(n, 2, device=dev) * self.translate * 2
        steps = [mat(flip, zero, zero, one, zero, zero),
                 mat(torch.cos(k), -torch.sin(k), torch.sin(k), torch.cos(k), zero, zero),
                 mat(one, zero, zero, one, t_int[:, 0], t_int[:, 1]),
                 mat(s, zero, zero, s, zero, zero),
                 mat(torch.cos(theta), -torch.sin(theta), torch.sin(theta), torch.cos(theta), zero, zero),
                 mat(a, zero, zero, 1 / a, zero, zero),
                 mat(one, zero, zero, one, t_frac[:, 0], t_frac[:, 1])]
        m = eye
        for step in steps:
            m = m @ maybe(step)
        grid = F.affine_grid(m[:, :2, :], list(x.shape), align_corners=False)
        moved = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        return torch.where(fired[:, None, None, None], moved.to(x.dtype), x)

    def _color(self, x: torch.Tensor, split: tuple[int, ...] | None) -> torch.Tensor:
        """Brightness, contrast and saturation, one draw per sample for all its images; the
        statistics of each image (its means) are its own, and saturation touches only the
        images with colour channels. A transform that does not fire leaves its images as they
        were, bit for bit."""
        n = x.shape[0]

        def draw(v):  # (a value per sample, and whether its transform fires)
            return v.view(n, 1, 1, 1).to(x.dtype), self._chance(x).view(n, 1, 1, 1)

        brightness, b_on = draw(torch.randn(n, device=x.device) * self.brightness_std)
        contrast, c_on = draw(torch.exp2(torch.randn(n, device=x.device) * self.contrast_std))
        images = _images(x, split)
        colour = any(g.shape[1] > 1 for g in images)  # (grey images alone draw no saturation)
        saturation, s_on = draw(torch.exp2(torch.randn(n, device=x.device) * self.saturation_std)) if colour \
            else (None, None)
        out = []
        for g in images:
            g = torch.where(b_on, g + brightness, g)
            mean = g.mean(dim=(1, 2, 3), keepdim=True)
            g = torch.where(c_on, (g - mean) * contrast + mean, g)
            if g.shape[1] > 1:  # saturation: only with colour channels
                mean = g.mean(dim=1, keepdim=True)
                g = torch.where(s_on, (g - mean) * saturation + mean, g)
            out.append(g)
        return torch.cat(out, 1) if len(out) > 1 else out[0]

    def __call__(self, x: torch.Tensor, split: tuple[int, ...] | None = None) -> torch.Tensor:
        self._to(x.device)
        return self._color(self._geometry(x), split)

    # ------------------------------------------------------------------ adapting p
    def observe(self, real_logits: torch.Tensor) -> None:
        self._to(real_logits.device)
        per_image = real_logits.reshape(real_logits.shape[0], -1).mean(1)  # (a PatchGAN: the mean patch)
        self.stats[0] += per_image.sign().sum()
        self.stats[1] += per_image.shape[0]

    def update(self, step: int, reduce: Callable[[torch.Tensor], torch.Tensor]) -> None:
        if step % self.interval:
            return
        total = reduce(self.stats.clone())
        self.rt.copy_(total[0] / total[1].clamp_min(1))  # (in place: a captured step holds these tensors)
        self.p.add_(torch.sign(self.rt - self.target) * total[1] / (self.kimg * 1000)).clamp_(0, 1)
        self.stats.zero_()

    def logs(self) -> dict[str, torch.Tensor]:
        return {"ada_p": self.p, "ada_rt": self.rt}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"p": self.p, "rt": self.rt, "stats": self.stats}

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        for key, mine in self.state_dict().items():
            mine.copy_(tensors[key])


@hookimpl
def ganforge_register_augments(register):
    register("diffaugment", DiffAugment, "DiffAugment (Zhao et al. 2020): color, translation, cutout on every image D sees")
    register("ada", ADA, "ADA (Karras et al. 2020): StyleGAN2-ADA's geometric and color transforms, adaptive p")
