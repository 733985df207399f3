"""Adversarial losses, all computed from discriminator logits in fp32.

Working on logits (``softplus`` forms instead of ``log(sigmoid(.))``) keeps them finite and
valid under autocast, where ``nn.BCELoss`` is refused.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ganforge import hookimpl

__all__ = ["BCE", "Hinge", "LeastSquares", "Loss", "Minimax", "RelativisticAverage", "RelativisticPaired", "Wasserstein"]


class Loss:
    """Base class: ``d_loss(real_logits, fake_logits)`` and ``g_loss(fake_logits)``, or
    ``g_loss(fake_logits, real_logits)`` with ``uses_real_logits = True`` (the systems then
    pass D's logits on the real batch, computed with D frozen).

    ``probabilistic`` says whether ``sigmoid(logit)`` is a probability that the sample is
    real (so ganforge logs mean D(x), D(G(z)) as probabilities) or a critic score (logged raw).
    ``capturable`` says that both losses are tensor code only, so the fast path may capture
    them in a CUDA graph (see ``ganforge.training.step``).
    """

    probabilistic = False
    capturable = False
    uses_real_logits = False

    def d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def g_loss(self, fake: torch.Tensor, real: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def score(self, logits: torch.Tensor) -> torch.Tensor:
        """What is logged as D(x): a probability for BCE-type losses, else the raw score."""
        return torch.sigmoid(logits) if self.probabilistic else logits


class BCE(Loss):
    """Non-saturating BCE: L_D = -log D(x) - log(1 - D(G(z))), L_G = -log D(G(z))."""

    capturable = True

    probabilistic = True

    def d_loss(self, real, fake):
        return F.softplus(-real.float()).mean() + F.softplus(fake.float()).mean()

    def g_loss(self, fake, real=None):
        return F.softplus(-fake.float()).mean()


class Minimax(BCE):
    """Saturating minimax BCE (Goodfellow et al. 2014): G minimises log(1 - D(G(z)))."""

    capturable = True

    def g_loss(self, fake, real=None):
        return -F.softplus(fake.float()).mean()


class Hinge(Loss):
    """Hinge loss (Lim & Ye 2017; SAGAN, BigGAN)."""

    capturable = True

    def d_loss(self, real, fake):
        return F.relu(1.0 - real.float()).mean() + F.relu(1.0 + fake.float()).mean()

    def g_loss(self, fake, real=None):
        return -fake.float().mean()


class Wasserstein(Loss):
    """Wasserstein critic loss (Arjovsky et al. 2017); pair it with penalty 'gp' (WGAN-GP)."""

    capturable = True

    def d_loss(self, real, fake):
        return fake.float().mean() - real.float().mean()

    def g_loss(self, fake, real=None):
        return -fake.float().mean()


class LeastSquares(Loss):
    """Least-squares GAN (Mao et al. 2017), targets 1 for real and 0 for fake."""

    capturable = True

    def d_loss(self, real, fake):
        return 0.5 * ((real.float() - 1.0) ** 2).mean() + 0.5 * (fake.float() ** 2).mean()

    def g_loss(self, fake, real=None):
        return 0.5 * ((fake.float() - 1.0) ** 2).mean()


class RelativisticAverage(Loss):
    """Relativistic average GAN loss, RaSGAN (Jolicoeur-Martineau 2018, arXiv:1807.00734).

    With C the critic's logits and ``Dr(a, b) = sigmoid(C(a) - mean C(b))``:
    L_D = -E_real log Dr(real, fake) - E_fake log(1 - Dr(fake, real)) and, both terms as in
    the paper, L_G = -E_fake log Dr(fake, real) - E_real log(1 - Dr(real, fake)): G also
    learns from making real data look less real than its fakes."""

    capturable = True
    uses_real_logits = True

    def d_loss(self, real, fake):
        real, fake = real.float(), fake.float()
        return F.softplus(-(real - fake.mean())).mean() + F.softplus(fake - real.mean()).mean()

    def g_loss(self, fake, real=None):
        real, fake = _real_logits(real, "relativistic").float(), fake.float()
        return F.softplus(-(fake - real.mean())).mean() + F.softplus(real - fake.mean()).mean()


class RelativisticPaired(Loss):
    """R3GAN's relativistic pairing loss, RpGAN (Huang et al. 2024, "The GAN is dead; long live
    the GAN!", eq. 2; Jolicoeur-Martineau 2018's RpGAN): each fake's logit against the real
    logit it is paired with, elementwise over the batch (and over a logit map's positions):
    L_D = E softplus(D(fake) - D(real)), L_G = E softplus(D(real) - D(fake)). With R1 and R2
    (penalties ``r1`` and ``r2``) it is R3GAN's regularised loss. Real and fake batches must have
    the same size (they do in every built-in system)."""

    capturable = True
    uses_real_logits = True

    def d_loss(self, real, fake):
        return F.softplus(fake.float() - _paired(real, fake).float()).mean()

    def g_loss(self, fake, real=None):
        real = _paired(_real_logits(real, "rpgan"), fake)
        return F.softplus(real.float() - fake.float()).mean()


def _real_logits(real, name: str):
    if real is None:
        from ganforge.errors import ConfigError

        raise ConfigError(f"loss '{name}' needs D's logits on real data in G's loss, and this system's G phase "
                          f"does not pass them (ganforge.system.g_adversarial(loss, fake, real=lambda: D(x)) "
                          f"does); choose another loss, e.g. bce or hinge")
    return real


def _paired(real, fake):
    if real.shape != fake.shape:
        from ganforge.errors import ConfigError

        raise ConfigError(f"loss 'rpgan' pairs each fake logit with a real one, but D gave {tuple(real.shape)} "
                          f"real and {tuple(fake.shape)} fake logits: the two batches must be the same size")
    return real


@hookimpl
def ganforge_register_losses(register):
    register("bce", BCE)
    register("minimax", Minimax)
    register("hinge", Hinge)
    register("wgan", Wasserstein)
    register("lsgan", LeastSquares)
    register("relativistic", RelativisticAverage)
    register("rpgan", RelativisticPaired)
