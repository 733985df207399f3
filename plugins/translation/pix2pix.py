"""pix2pix: paired image-to-image translation as a system.

Isola, Zhu, Zhou, Efros, "Image-to-Image Translation with Conditional Adversarial Networks"
(CVPR 2017), https://arxiv.org/abs/1611.07004. A generator G (the U-Net) maps an input image
a to b; a conditional discriminator D (PatchGAN) judges (input, output) pairs, the two images
concatenated along channels: D(a, b) against D(a, G(a)). G minimises the adversarial loss plus
``l1_weight * |G(a) - b|_1`` (lambda = 100); D's objective is halved, as in the paper. Phases:
``D`` then ``G`` on the same batch (G's output is recomputed in G's phase, where it needs a
graph; the paper's code computes it once). With ``gan_weight: 0`` the system is the paper's
"L1 only" baseline: G alone, no D.

Batches come from a paired dataset (``paired_folder``, ``mnist_edges``): ``(a, b[, labels])``.
"""
from __future__ import annotations

from typing import Any

import torch

from ganforge import hookimpl
from ganforge.plugins.translation import TranslationSystem, arrange, split_batch
from ganforge.system import (Judged, Judgement, Network, Optimizer, Phase, Terms, d_adversarial, feature_matching,
                             g_adversarial)

__all__ = ["Pix2Pix"]


class Pix2Pix(TranslationSystem):
    capturable = True  # tensor code only; batches from the dataset's fetch

    def __init__(self, loss: Any, dataset: Any, optim: Any, l1_weight: float = 100.0, gan_weight: float = 1.0,
                 test_mode: str = "train", feature_weight: float = 0.0):
        super().__init__(dataset)
        if test_mode not in ("train", "eval"):
            raise ValueError(f"test_mode is 'train' (the paper: dropout kept, BatchNorm from the test batch) "
                             f"or 'eval' (running statistics, no dropout), got {test_mode!r}")
        self.test_mode = test_mode
        if not getattr(dataset, "paired", False):
            raise ValueError("pix2pix needs paired data (each A image with its B image: paired_folder, "
                             "mnist_edges); for unpaired domains use objective=cyclegan")
        if l1_weight < 0 or gan_weight < 0:
            raise ValueError(f"l1_weight and gan_weight are weights >= 0, got {l1_weight} and {gan_weight}")
        if l1_weight == 0 and gan_weight == 0:
            raise ValueError("l1_weight and gan_weight are both 0: G would learn nothing")
        if feature_weight < 0 or (feature_weight and not gan_weight):
            raise ValueError(f"feature_weight weighs feature matching through D, >= 0 and only with gan_weight > 0; "
                             f"got {feature_weight}")
        self.loss, self.l1_weight, self.gan_weight, self.feature_weight = loss, l1_weight, gan_weight, feature_weight
        betas, decay = tuple(optim.betas), optim.weight_decay
        a, b = self.a_shape, self.b_shape
        self.networks = {"G": Network("generator", {"in_shape": a, "out_shape": b}, ema=True)}
        self.optimizers = {"G": Optimizer(["G"], optim.lr_g, betas, decay)}
        self.phases = [Phase("G", "G", self.g_loss)]
        if gan_weight:  # D judges (input, output) pairs: both images as channels
            self.networks["D"] = Network("discriminator", {"in_shape": (a[0] + b[0], *b[1:])})
            self.channel_split = (a[0], b[0])  # augmentations transform both alike
            self.optimizers["D"] = Optimizer(["D"], optim.lr_d, betas, decay)
            self.phases.insert(0, Phase("D", "D", self.d_loss, penalize=["D"]))
            self.phases[1].new_batch = False  # G on the batch D saw
        self.directions = {"AtoB": ("G", a, b)}

    def check(self, nets):
        super().check(nets)
        if self.feature_weight:
            with torch.no_grad():
                out = nets["D"](torch.zeros(2, *self.networks["D"].context["in_shape"]))
            if not isinstance(out, Judgement) or not out.features:
                raise ValueError("feature_weight needs a discriminator that returns its features "
                                 "(Judgement(logits, features)): discriminator=multiscale_patchgan")

    def generate(self, nets, inputs):
        out = nets["G"](inputs.a)
        return arrange([inputs.a, out, inputs.target_ab]) if inputs.show else out

    def d_loss(self, batch) -> Terms:
        a, b = split_batch(batch)
        with torch.no_grad():  # D's phase needs no graph through G
            fake = self.nets["G"](a)
        real_pair, fake_pair = torch.cat([a, b], 1), torch.cat([a, fake], 1)
        D = self.nets["D"]
        real_out = D(real_pair)
        loss, logs = d_adversarial(self.loss, real_out, D(fake_pair))
        return Terms(0.5 * loss, logs, judged={"D": Judged((real_pair,), (fake_pair,), real_logits=real_out)})

    def g_loss(self, batch) -> Terms:
        a, b = split_batch(batch)
        fake = self.nets["G"](a)
        l1 = (fake.float() - b.float()).abs().mean()
        loss, logs = self.l1_weight * l1, {"g_l1": l1.detach()}
        if self.gan_weight and self.runs("D"):  # (phases.D.start: an L1-only warm-up before D starts)
            D = self.nets["D"]
            seen = []  # D's judgement of the real pair, when the loss asks for it (relativistic)

            def real():
                seen.append(D(torch.cat([a, b], 1)))
                return seen[-1]

            fake_out = D(torch.cat([a, fake], 1))
            adv, adv_logs = g_adversarial(self.loss, fake_out, real)
            loss = loss + self.gan_weight * adv
            logs.update(g_gan=adv.detach(), **adv_logs)
            if self.feature_weight:  # pix2pixHD: match D's features of the real pair (targets, D frozen)
                if not seen:
                    with torch.no_grad():
                        real()
                matching = feature_matching(seen[-1], fake_out, pix2pixhd=True)  # (1 / num_D, 4 / layers)
                loss = loss + self.feature_weight * matching
                logs["g_feat"] = matching.detach()
        return Terms(loss, logs)


def pix2pix(*, loss, optim, dataset, l1_weight: float = 100.0, gan_weight: float = 1.0, test_mode: str = "train",
            feature_weight: float = 0.0):
    """pix2pix (Isola et al. 2017): conditional PatchGAN on (input, output) pairs + 100 * L1;
    test_mode train (the paper's test time: dropout kept, BatchNorm from the batch) or eval;
    feature_weight: pix2pixHD's feature matching (10 there), with a D that returns features."""
    return Pix2Pix(loss, dataset, optim, l1_weight, gan_weight, test_mode, feature_weight)


@hookimpl
def ganforge_register_objectives(register):
    register("pix2pix", pix2pix)
