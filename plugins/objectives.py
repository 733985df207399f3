"""Training objectives: the adversarial systems ganforge ships.

An objective plugin returns a :class:`ganforge.system.GANSystem`: the networks, optimizers and
phases of one training step, as data. ``unconditional`` is the classic game between G(z) and
the data (two networks, two optimizers, phases ``D`` x n_critic then ``G``); ``infogan`` adds
InfoGAN's code. Class-conditional GANs, pix2pix and CycleGAN are other systems registered by
plugins; the engine does not change.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ganforge import hookimpl
from ganforge.layers import forward_with_code_head
from ganforge.system import GANSystem, Judged, Network, Optimizer, Phase, Terms, d_adversarial, g_adversarial

__all__ = ["InfoGAN", "Unconditional", "forward_with_code_head"]


class Unconditional(GANSystem):
    """Unconditional GAN: G(z) with z ~ N(0, I) against the data; labels are ignored.

    Networks ``G`` (a generator, with EMA when ``train.ema`` > 0) and ``D``; optimizers ``G``
    and ``D`` (``optim.lr_g``/``lr_d``); phases ``D`` (n_critic times, each on a fresh batch,
    penalties on D) and ``G`` (on the last batch D saw, D frozen).
    """

    capturable = True  # tensor code only: the fast path may capture it in a CUDA graph

    def __init__(self, loss: Any, z_dim: int, sample_shape: tuple[int, ...], n_critic: int = 1,
                 optim: Any = None):
        self.loss, self.z_dim, self.sample_shape = loss, z_dim, tuple(sample_shape)
        lr_g, lr_d = (optim.lr_g, optim.lr_d) if optim is not None else (2e-4, 2e-4)
        betas = tuple(optim.betas) if optim is not None else (0.5, 0.999)
        decay = optim.weight_decay if optim is not None else 0.0
        self.networks = {
            "G": Network("generator", {"z_dim": z_dim, "out_shape": self.sample_shape}, ema=True),
            "D": Network("discriminator", {"in_shape": self.sample_shape}),
        }
        self.optimizers = {"G": Optimizer(["G"], lr_g, betas, decay), "D": Optimizer(["D"], lr_d, betas, decay)}
        self.phases = [Phase("D", "D", self.d_loss, repeats=n_critic, penalize=["D"]),
                       Phase("G", "G", self.g_loss, new_batch=False, penalize=["G"])]  # (generator penalties)

    @property
    def G(self) -> nn.Module:
        return self.nets["G"]

    @property
    def D(self) -> nn.Module:
        return self.nets["D"]

    def check(self, nets):
        with torch.no_grad():  # fail now, with the shapes, rather than in the middle of a step
            noise = self.noise(2)
            fake = self.generate(nets, noise)
            if tuple(fake.shape[1:]) != self.sample_shape:
                raise ValueError(f"the generator makes samples of shape {tuple(fake.shape[1:])} but "
                                 f"the dataset's are {self.sample_shape}")
            self.check_discriminator(nets["D"], fake, noise)

    def check_discriminator(self, D: nn.Module, fake: torch.Tensor, noise: Any) -> None:
        """D must give one logit per sample (subclasses: with their extra inputs or heads)."""
        one_logit_each(D(fake))

    @staticmethod
    def _real(batch: Any) -> torch.Tensor:
        return batch[0] if isinstance(batch, (tuple, list)) else batch

    def noise(self, n, device="cpu", generator=None):
        return torch.randn(n, self.z_dim, device=device, generator=generator)

    def generate(self, nets, noise):
        return nets["G"](noise)

    def judge(self, fake: torch.Tensor, noise: Any) -> tuple[torch.Tensor, torch.Tensor | None, dict]:
        """D's logits for ``fake`` made from ``noise``, plus any extra loss term both players
        add and its statistics (none here; subclasses such as :class:`InfoGAN` add one)."""
        return self.D(fake), None, {}

    def d_loss(self, batch) -> Terms:
        real = self._real(batch)
        z = self.noise(real.shape[0], real.device)
        with torch.no_grad():  # D's step needs no graph through G
            fake = self.G(z)
        real_logits = self.D(real)
        fake_logits, extra, extra_stats = self.judge(fake, z)
        loss, logs = d_adversarial(self.loss, real_logits, fake_logits)
        if extra is not None:
            loss = loss + extra
        return Terms(loss, {**logs, **extra_stats}, judged={"D": Judged((real,), (fake,), real_logits=real_logits)})

    def g_loss(self, batch) -> Terms:
        real = self._real(batch)
        z = self.noise(real.shape[0], real.device)
        fake_logits, extra, _ = self.judge(self.G(z), z)
        loss, logs = g_adversarial(self.loss, fake_logits, lambda: self.D(real))  # (real: relativistic losses)
        if extra is not None:
            loss = loss + extra
        return Terms(loss, logs, judged={"G": Judged(fake=(z,))})


def one_logit_each(out: torch.Tensor) -> None:
    """A discriminator's output for the 2 samples of :meth:`Unconditional.check`."""
    if out.numel() != 2:
        raise ValueError(f"the discriminator returned shape {tuple(out.shape)} for 2 samples; "
                         f"it must return one logit per sample")


def unconditional(*, loss, z_dim, sample_shape, n_critic, optim):
    """Unconditional GAN: G(z), z ~ N(0, I), against the data (labels ignored)."""
    return Unconditional(loss, z_dim, sample_shape, n_critic, optim)


class InfoGAN(Unconditional):
    """Unconditional GAN plus InfoGAN's categorical code (Chen et al. 2016, arXiv:1606.03657).

    G's input is ``z_dim`` numbers: ``z_dim - codes`` Gaussian ones, then a one-hot code
    ``c ~ Uniform{0..codes-1}``. D has a Q head (``discriminator.args.codes``) that predicts
    c from a sample; both players add ``weight * CE(Q(G(z, c)), c)``, a lower bound on the
    mutual information between c and the sample (up to a constant). No labels are used: the
    code learns to split the samples into ``codes`` equally likely groups. On MNIST these only
    partly follow the digits (2 of 10 codes gave one digit >= 90% of the time after 16000 steps
    of ``mnist_infogan``; benchmarks/RESULTS.md).

    D is frozen in G's phase (the engine's rule), so Q learns in D's phase from the fakes D
    sees there, and G learns to make its code readable through the frozen Q.

    A discriminator of one's own qualifies by having a ``q`` layer with ``codes`` outputs and
    a ``forward(x, codes=False)`` that returns ``(logits, code_logits)`` when ``codes`` is
    true (:func:`ganforge.layers.forward_with_code_head` does it for a ``Sequential`` body).
    """

    capturable = True  # the code is drawn and one-hot encoded with tensor ops (scatter)

    def __init__(self, loss, z_dim: int, sample_shape, n_critic: int = 1, optim=None,
                 codes: int = 10, weight: float = 1.0):
        if not 1 < codes < z_dim:
            raise ValueError(f"codes must be between 2 and z_dim - 1 (train.z_dim={z_dim}), got {codes}")
        super().__init__(loss, z_dim, sample_shape, n_critic, optim)
        self.codes, self.weight = codes, weight

    def check(self, nets):
        q = getattr(nets["D"], "q", None)
        if q is None or _out_features(q) != self.codes:
            raise ValueError(
                f"needs a discriminator with a {self.codes}-way code head: set discriminator.args.codes="
                f"{self.codes} (the 'dcgan' and 'infogan' discriminators have one)")
        super().check(nets)

    def noise(self, n, device="cpu", generator=None):
        z = torch.randn(n, self.z_dim - self.codes, device=device, generator=generator)
        c = torch.randint(self.codes, (n,), device=device, generator=generator)
        one_hot = torch.zeros(n, self.codes, device=device).scatter_(1, c[:, None], 1.0)  # capture-safe
        return torch.cat([z, one_hot], 1)

    @property
    def grid_nrow(self) -> int:
        return self.codes

    def grid_noise(self, n, device="cpu", generator=None):
        """As in the paper's figures: each row of the grid is one Gaussian noise vector with
        every code in turn, code ``j`` in column ``j`` (``grid_nrow = codes``); the last row
        is cut short when ``n`` is not a multiple of ``codes``."""
        rows = -(-n // self.codes)
        z = torch.randn(rows, self.z_dim - self.codes, device=device, generator=generator)
        one_hot = torch.eye(self.codes, device=device)
        grid = torch.cat([z.repeat_interleave(self.codes, 0), one_hot.repeat(rows, 1)], 1)
        return grid[:n]

    def code(self, noise: torch.Tensor) -> torch.Tensor:
        """The code (class index) of each row of ``noise``."""
        return noise[:, self.z_dim - self.codes:].argmax(1)

    def judge(self, fake, noise):
        fake_logits, code_logits = self.D(fake, codes=True)
        info = F.cross_entropy(code_logits.float(), self.code(noise))
        return fake_logits, self.weight * info, {"info_ce": info.detach()}


def _out_features(layer: nn.Module) -> int:
    return getattr(layer, "out_features", None) or getattr(layer, "out_channels", 0)


def infogan(*, loss, z_dim, sample_shape, n_critic, optim, codes: int = 10, weight: float = 1.0):
    """Unconditional GAN with InfoGAN's categorical latent code (needs a D with a code head)."""
    return InfoGAN(loss, z_dim, sample_shape, n_critic, optim, codes, weight)


@hookimpl
def ganforge_register_objectives(register):
    register("unconditional", unconditional)
    register("infogan", infogan)
