"""DiffAugment as a ganforge objective (a GANSystem, plugin API 2).

Zhao, Liu, Lin, Zhu, Han, "Differentiable Augmentation for Data-Efficient GAN Training"
(NeurIPS 2020), https://arxiv.org/abs/2006.10738: every sample D sees, real or fake, in the D
and the G step, goes through the same random differentiable augmentations (policy
"color,translation,cutout" by default), so D cannot memorise a small dataset and G still gets
useful gradients.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

import ganforge
from ganforge.plugins.objectives import Unconditional
from ganforge.system import Terms

GANFORGE_PLUGIN_API = 2


def _color(x):
    b = x.shape[0]
    x = x + (torch.rand(b, 1, 1, 1, device=x.device) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (torch.rand(b, 1, 1, 1, device=x.device) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (torch.rand(b, 1, 1, 1, device=x.device) + 0.5) + mean


def _translation(x, ratio=0.125):
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    tx = torch.randint(-sh, sh + 1, (b, 1, 1), device=x.device)
    ty = torch.randint(-sw, sw + 1, (b, 1, 1), device=x.device)
    gb, gx, gy = torch.meshgrid(torch.arange(b, device=x.device), torch.arange(h, device=x.device),
                                torch.arange(w, device=x.device), indexing="ij")
    gx = torch.clamp(gx + tx + 1, 0, h + 1)
    gy = torch.clamp(gy + ty + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1, 0, 0, 0, 0])
    return padded.permute(0, 2, 3, 1).contiguous()[gb, gx, gy].permute(0, 3, 1, 2)


def _cutout(x, ratio=0.5):
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ox = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), device=x.device)
    oy = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), device=x.device)
    gb, gx, gy = torch.meshgrid(torch.arange(b, device=x.device), torch.arange(ch, device=x.device),
                                torch.arange(cw, device=x.device), indexing="ij")
    gx = torch.clamp(gx + ox - ch // 2, 0, h - 1)
    gy = torch.clamp(gy + oy - cw // 2, 0, w - 1)
    mask = torch.ones(b, h, w, dtype=x.dtype, device=x.device)
    mask[gb, gx, gy] = 0
    return x * mask.unsqueeze(1)


AUGMENTS = {"color": _color, "translation": _translation, "cutout": _cutout}


def diff_augment(x: torch.Tensor, policy: str) -> torch.Tensor:
    for name in filter(None, policy.split(",")):
        x = AUGMENTS[name](x)
    return x


class DiffAugment(Unconditional):
    """The unconditional system (networks G and D, phases D then G) with every sample D
    sees augmented; penalties see the augmented inputs D judged."""

    capturable = False  # the augmentations draw shapes from Python ints: not checked for capture

    def __init__(self, loss, z_dim, sample_shape, n_critic, optim, policy):
        super().__init__(loss, z_dim, sample_shape, n_critic, optim)
        self.policy = policy

    def d_loss(self, batch):
        real = self._real(batch)
        with torch.no_grad():
            fake = self.G(self.noise(real.shape[0], real.device))
        real_aug, fake_aug = diff_augment(real, self.policy), diff_augment(fake, self.policy)
        r, f = self.D(real_aug), self.D(fake_aug)
        logs = {"d_real": self.loss.score(r.detach().float()).mean(),
                "d_fake": self.loss.score(f.detach().float()).mean()}
        return Terms(self.loss.d_loss(r, f), logs, judged={"D": (real_aug, fake_aug)})

    def g_loss(self, batch):
        real = self._real(batch)
        f = self.D(diff_augment(self.G(self.noise(real.shape[0], real.device)), self.policy))
        return Terms(self.loss.g_loss(f))


def diffaugment(*, loss, z_dim, sample_shape, n_critic, optim, policy: str = "color,translation,cutout"):
    """DiffAugment (Zhao et al. 2020): the same differentiable augmentations on real and fake."""
    unknown = [p for p in filter(None, policy.split(",")) if p not in AUGMENTS]
    if unknown:
        raise ValueError(f"unknown DiffAugment policy {unknown}; choose from {', '.join(AUGMENTS)}")
    return DiffAugment(loss, z_dim, sample_shape, n_critic, optim, policy)


@ganforge.hookimpl
def ganforge_register_objectives(register):
    register("diffaugment", diffaugment)
