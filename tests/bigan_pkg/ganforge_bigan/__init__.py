"""A BiGAN (Donahue et al. 2017; ALI, Dumoulin et al. 2017) as an outside plugin would write it:
three networks, one of a new kind. G maps z to x, the encoder E (kind ``encoder``, built by
default from the registered ``mlp_encoder``) maps x to z, and D judges pairs: real (x, E(x))
against fake (G(z), z). R1 penalises D on both of its inputs. The package also ships a recipe,
``bigan_toy``, usable by name once installed (``ganforge_register_recipes``)."""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import ganforge
from ganforge.system import GANSystem, Judged, Network, Optimizer, Phase, Terms

GANFORGE_PLUGIN_API = 2


class PairDiscriminator(nn.Module):
    """D(x, z): logits for pairs of a sample and a code."""

    def __init__(self, in_shape, z_dim, hidden=64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(math.prod(in_shape) + z_dim, hidden), nn.LeakyReLU(0.2),
                                 nn.Linear(hidden, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1))

    def forward(self, x, z):
        return self.net(torch.cat([x.flatten(1), z], 1)).squeeze(1)


def pair_mlp(*, in_shape, z_dim, hidden: int = 64):
    """An MLP discriminator of (sample, code) pairs."""
    return PairDiscriminator(in_shape, z_dim, hidden)


class BiGAN(GANSystem):
    capturable = True

    def __init__(self, *, loss, z_dim, sample_shape, optim):
        self.z_dim, self.shape = z_dim, tuple(sample_shape)
        self.networks = {
            "G": Network("generator", {"z_dim": z_dim, "out_shape": self.shape}),
            "E": Network("encoder", {"in_shape": self.shape, "z_dim": z_dim}, default="mlp_encoder",
                         args={"hidden": [64]}),
            "D": Network("discriminator", {"in_shape": self.shape, "z_dim": z_dim}, default="pair_mlp"),
        }
        self.optimizers = {"D": Optimizer(["D"], optim.lr_d, tuple(optim.betas)),
                           "GE": Optimizer(["G", "E"], optim.lr_g, tuple(optim.betas))}
        self.phases = [Phase("D", "D", self.d_loss, penalize=["D"]), Phase("GE", "GE", self.ge_loss)]

    def _pairs(self, batch):
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        z = torch.randn(x.shape[0], self.z_dim, device=x.device)
        return (x, self.nets["E"](x)), (self.nets["G"](z), z)

    def d_loss(self, batch):
        (x, ex), (gz, z) = self._pairs(batch)
        real, fake = (x, ex.detach()), (gz.detach(), z)
        real_logits, fake_logits = self.nets["D"](*real), self.nets["D"](*fake)
        loss = F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
        return Terms(loss, {"d_real": torch.sigmoid(real_logits).mean().detach()}, {"D": Judged(real, fake)})

    def ge_loss(self, batch):  # G and E fool D the other way round
        (x, ex), (gz, z) = self._pairs(batch)
        loss = F.softplus(self.nets["D"](x, ex)).mean() + F.softplus(-self.nets["D"](gz, z)).mean()
        return Terms(loss)

    def noise(self, n, device="cpu", generator=None):
        return torch.randn(n, self.z_dim, device=device, generator=generator)

    def generate(self, nets, noise):
        return nets["G"](noise)


def bigan(*, loss, z_dim, sample_shape, optim):
    """BiGAN: G, an encoder E and a pair discriminator D(x, z)."""
    return BiGAN(loss=loss, z_dim=z_dim, sample_shape=sample_shape, optim=optim)


@ganforge.hookimpl
def ganforge_register_discriminators(register):
    register("pair_mlp", pair_mlp)


@ganforge.hookimpl
def ganforge_register_objectives(register):
    register("bigan", bigan)


@ganforge.hookimpl
def ganforge_register_recipes(register):
    register("bigan_toy", Path(__file__).with_name("bigan_toy.yaml"))
