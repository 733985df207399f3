"""Training objectives: how a batch of data becomes D and G losses.

The engine owns optimizers, precision, devices and the order of updates; an objective owns
what is fed to G and D. ``unconditional`` is the classic game between G(z) and the data. A
class-conditional GAN (labels to G and D) or an image-to-image model (pix2pix: G sees an input
image, D sees pairs) is another objective registered by a plugin; the engine does not change.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ganforge import hookimpl

__all__ = ["DOutput", "InfoGAN", "Objective", "Unconditional", "forward_with_code_head"]


@dataclass
class DOutput:
    """The discriminator step's loss, the real and fake samples it used (for penalties) and
    detached scalar statistics to log."""

    loss: torch.Tensor
    real: torch.Tensor
    fake: torch.Tensor
    stats: dict[str, torch.Tensor] = field(default_factory=dict)


class Objective:
    """Interface of an objective (see :class:`Unconditional` for the reference).

    Set ``capturable = True`` when ``d_loss`` and ``g_loss`` are tensor code only (no
    ``.item()``, no Python branch on a tensor's value, the same shapes every step, random
    numbers from torch's default generator): then the engine may capture the whole training
    step in a CUDA graph (``ganforge.fastpath``). Otherwise it runs the eager step.
    """

    capturable = False

    def noise(self, n: int, device: torch.device | str = "cpu",
              generator: torch.Generator | None = None) -> Any:
        """Generator inputs for ``n`` independent samples (training, evaluation)."""
        raise NotImplementedError

    #: images per row of a sample grid; ``None``: as square as possible
    grid_nrow: int | None = None

    def grid_noise(self, n: int, device: torch.device | str = "cpu",
                   generator: torch.Generator | None = None) -> Any:
        """Generator inputs for a sample grid of ``n`` images (the training grid and
        ``ganforge sample``). By default the same as :meth:`noise`; an objective with a
        meaningful code arranges the grid by it (with :attr:`grid_nrow`)."""
        return self.noise(n, device, generator)

    def generate(self, G: nn.Module, noise: Any) -> torch.Tensor:
        """Samples from generator ``G`` (which may be the EMA copy) for ``noise``."""
        raise NotImplementedError

    def d_loss(self, batch: Any) -> DOutput:
        """Discriminator loss for one batch from the data loader."""
        raise NotImplementedError

    def g_loss(self, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Generator loss; ``batch`` is the last batch the D step saw (for conditioning)."""
        raise NotImplementedError


class Unconditional(Objective):
    """Unconditional GAN: G(z) with z ~ N(0, I) against the data; labels are ignored."""

    capturable = True  # tensor code only: the fast path may capture it in a CUDA graph

    def __init__(self, generator: nn.Module, discriminator: nn.Module, loss: Any, z_dim: int):
        self.G, self.D, self.loss, self.z_dim = generator, discriminator, loss, z_dim

    @staticmethod
    def _real(batch: Any) -> torch.Tensor:
        return batch[0] if isinstance(batch, (tuple, list)) else batch

    def noise(self, n, device="cpu", generator=None):
        return torch.randn(n, self.z_dim, device=device, generator=generator)

    def generate(self, G, noise):
        return G(noise)

    def judge(self, fake: torch.Tensor, noise: Any) -> tuple[torch.Tensor, torch.Tensor | None, dict]:
        """D's logits for ``fake`` made from ``noise``, plus any extra loss term both players
        add and its statistics (none here; subclasses such as :class:`InfoGAN` add one)."""
        return self.D(fake), None, {}

    def d_loss(self, batch):
        real = self._real(batch)
        z = self.noise(real.shape[0], real.device)
        with torch.no_grad():  # D's step needs no graph through G
            fake = self.G(z)
        real_logits = self.D(real)
        fake_logits, extra, extra_stats = self.judge(fake, z)
        loss = self.loss.d_loss(real_logits, fake_logits)
        if extra is not None:
            loss = loss + extra
        stats = {"d_real": self.loss.score(real_logits.detach().float()).mean(),
                 "d_fake": self.loss.score(fake_logits.detach().float()).mean(), **extra_stats}
        return DOutput(loss, real, fake, stats)

    def g_loss(self, batch):
        real = self._real(batch)
        z = self.noise(real.shape[0], real.device)
        fake_logits, extra, _ = self.judge(self.G(z), z)
        loss = self.loss.g_loss(fake_logits)
        if extra is not None:
            loss = loss + extra
        return loss, {"d_fake_g": self.loss.score(fake_logits.detach().float()).mean()}


def unconditional(*, generator, discriminator, loss, z_dim):
    """Unconditional GAN: G(z), z ~ N(0, I), against the data (labels ignored)."""
    return Unconditional(generator, discriminator, loss, z_dim)


class InfoGAN(Unconditional):
    """Unconditional GAN plus InfoGAN's categorical code (Chen et al. 2016, arXiv:1606.03657).

    G's input is ``z_dim`` numbers: ``z_dim - codes`` Gaussian ones, then a one-hot code
    ``c ~ Uniform{0..codes-1}``. D has a Q head (``discriminator.args.codes``) that predicts
    c from a sample; both players add ``weight * CE(Q(G(z, c)), c)``, a lower bound on the
    mutual information between c and the sample (up to a constant). No labels are used: the
    code learns to split the samples into ``codes`` equally likely groups. On MNIST these only
    partly follow the digits (2 of 10 codes gave one digit >= 90% of the time after 16000 steps
    of ``mnist_infogan``; benchmarks/RESULTS.md).

    D is frozen in G's step (the engine's rule), so Q learns in D's step from the fakes D sees
    there, and G learns to make its code readable through the frozen Q.

    A discriminator of one's own qualifies by having a ``q`` layer with ``codes`` outputs and
    a ``forward(x, codes=False)`` that returns ``(logits, code_logits)`` when ``codes`` is
    true (:func:`forward_with_code_head` does it for a ``Sequential`` body).
    """

    def __init__(self, generator, discriminator, loss, z_dim: int, codes: int = 10, weight: float = 1.0):
        super().__init__(generator, discriminator, loss, z_dim)
        if not 1 < codes < z_dim:
            raise ValueError(f"codes must be between 2 and z_dim - 1 (train.z_dim={z_dim}), got {codes}")
        inner = getattr(discriminator, "module", discriminator)  # under DDP, the wrapped model
        q = getattr(inner, "q", None)
        if discriminator is not None and (q is None or _out_features(q) != codes):
            raise ValueError(
                f"needs a discriminator with a {codes}-way code head: set discriminator.args.codes="
                f"{codes} (the 'dcgan' and 'infogan' discriminators have one)")
        self.codes, self.weight = codes, weight

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


def forward_with_code_head(net: nn.Sequential, q: nn.Module | None, x: torch.Tensor, codes: bool):
    """A discriminator's forward when ``net``'s last layer gives the logit and ``q``, on the same
    features, the code logits (InfoGAN's Q head): logits, or ``(logits, code_logits)``."""
    if not codes:
        return net(x).view(-1)
    if q is None:
        raise ValueError("this discriminator has no code head: set discriminator.args.codes")
    h = net[:-1](x)
    return net[-1](h).view(-1), q(h).flatten(1)


def _out_features(layer: nn.Module) -> int:
    return getattr(layer, "out_features", None) or getattr(layer, "out_channels", 0)


def infogan(*, generator, discriminator, loss, z_dim, codes: int = 10, weight: float = 1.0):
    """Unconditional GAN with InfoGAN's categorical latent code (needs a D with a code head)."""
    return InfoGAN(generator, discriminator, loss, z_dim, codes, weight)


@hookimpl
def ganforge_register_objectives(register):
    register("unconditional", unconditional)
    register("infogan", infogan)
