"""Class-conditional GANs as systems: ``conditional`` (labels to G and D) and ``acgan`` (labels to
G, an auxiliary classifier head on D).

Both need a dataset with classes (``num_classes``: MNIST, Fashion-MNIST, CIFAR-10, the toy
mixtures' modes, an image folder with ``args: {classes: true}``). Fake labels are drawn
uniformly, or from the data's class frequencies (``objective.args.labels: data``). G's input is
``(z, y)``; samples for grids, ``ganforge sample --label`` and metrics are made for chosen
labels. Everything is tensor code (labels stay on the device next to the data), so the CUDA-graph
fast path captures both.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ganforge import hookimpl
from ganforge.plugins.objectives import Unconditional, one_logit_each
from ganforge.system import Judged, Terms, d_adversarial, g_adversarial

__all__ = ["ACGAN", "Conditional"]

LABELS = ("uniform", "data")


class Conditional(Unconditional):
    """Class-conditional GAN (Mirza & Osindero 2014): G(z, y) against D(x, y), with the
    networks' own conditioning (cBN / concat in G, projection / concat in D: see the
    architectures). Networks, optimizers and phases are the unconditional system's."""

    capturable = True  # labels drawn and gathered with tensor ops, on the device

    def __init__(self, loss, z_dim, sample_shape, n_critic, optim, num_classes: int,
                 labels: str = "uniform", frequencies: torch.Tensor | None = None):
        super().__init__(loss, z_dim, sample_shape, n_critic, optim)
        self.num_classes, self.label_mode = num_classes, labels
        self.frequencies = frequencies if labels == "data" else None
        # labels: data draws by inverse CDF (a uniform number and searchsorted: tensor code that
        # a CUDA graph captures); the CDF is kept on each device it is used on, and put on the
        # training device in setup(), so the step never copies it from the host
        self._cdf: dict[torch.device, torch.Tensor] = {}
        self.networks["G"].context["num_classes"] = num_classes
        self.networks["D"].context["num_classes"] = num_classes
        self.grid_nrow = None

    # --- labels
    def draw_labels(self, n: int, device: Any = "cpu", generator: torch.Generator | None = None) -> torch.Tensor:
        """Labels for ``n`` fakes: uniform, or with the data's class frequencies."""
        if self.frequencies is None:
            return torch.randint(self.num_classes, (n,), device=device, generator=generator)
        u = torch.rand(n, device=device, generator=generator, dtype=torch.float64)
        return torch.searchsorted(self._cdf_on(torch.device(device)), u, right=True).clamp_max_(self.num_classes - 1)

    def _cdf_on(self, device: torch.device) -> torch.Tensor:
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        cdf = self._cdf.get(device)
        if cdf is None:
            cdf = self._cdf[device] = torch.cumsum(self.frequencies.double(), 0).to(device)
        return cdf

    def setup(self, nets) -> None:
        super().setup(nets)
        if self.frequencies is not None:  # the training device's copy, made before the first step
            self._cdf_on(next(next(iter(nets.values())).parameters()).device)

    @staticmethod
    def _split(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise ValueError("the conditional objectives need (sample, label) batches: a dataset with labels")
        return batch[0], batch[1]

    def noise(self, n, device="cpu", generator=None, labels: torch.Tensor | None = None):
        """``(z, y)``; ``labels`` fixes y (a tensor of n labels), else y is drawn."""
        z = torch.randn(n, self.z_dim, device=device, generator=generator)
        y = self.draw_labels(n, device, generator) if labels is None else labels.to(device)
        return z, y

    def labels_of(self, noise: Any) -> torch.Tensor:
        return noise[1]

    def grid_noise(self, n, device="cpu", generator=None):
        """One row per class, one noise vector per column (the same z across classes), so a
        grid shows each class in the same styles: ``ceil(n / classes)`` columns."""
        cols = max(1, -(-n // self.num_classes))
        self.grid_nrow = cols
        z = torch.randn(cols, self.z_dim, device=device, generator=generator).repeat(self.num_classes, 1)
        y = torch.arange(self.num_classes, device=device).repeat_interleave(cols)
        return z, y

    def generate(self, nets, noise):
        z, y = noise
        return nets["G"](z, y)

    def check_discriminator(self, D, fake, noise):
        one_logit_each(D(fake, noise[1]))

    # --- the phases
    def _batch_and_fakes(self, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """D's phase: the real batch and its labels, and fakes made (without a graph through G)
        for labels drawn as the objective says."""
        real, y_real = self._split(batch)
        z, y_fake = self.noise(real.shape[0], real.device)
        with torch.no_grad():
            fake = self.G(z, y_fake)
        return real, y_real, fake, y_fake

    def d_loss(self, batch) -> Terms:
        real, y_real, fake, y_fake = self._batch_and_fakes(batch)
        real_logits, fake_logits = self.D(real, y_real), self.D(fake, y_fake)
        loss, logs = d_adversarial(self.loss, real_logits, fake_logits)
        D = self.D
        # penalties see D with the real batch's labels (R1 is on real data)
        judged = {"D": Judged((real,), (fake,), lambda x: D(x, y_real), real_logits=real_logits)}
        return Terms(loss, logs, judged)

    def g_loss(self, batch) -> Terms:
        real, y_real = self._split(batch)
        z, y = self.noise(real.shape[0], real.device)
        fake_logits = self.D(self.G(z, y), y)
        G = self.G
        return Terms(*g_adversarial(self.loss, fake_logits, lambda: self.D(real, y_real)),
                     judged={"G": Judged(fake=(z,), forward=lambda z_: G(z_, y[:len(z_)]))})


class ACGAN(Conditional):
    """AC-GAN (Odena et al. 2017, arXiv:1610.09585): G(z, y); D is unconditional with an
    auxiliary classifier head (its code head: ``codes`` = the number of classes, set by this
    objective). D adds ``weight * (CE(C(x), y) + CE(C(G(z, y)), y'))``, G adds
    ``weight * CE(C(G(z, y)), y)``."""

    capturable = True

    def __init__(self, loss, z_dim, sample_shape, n_critic, optim, num_classes: int,
                 labels: str = "uniform", frequencies=None, weight: float = 1.0):
        super().__init__(loss, z_dim, sample_shape, n_critic, optim, num_classes, labels, frequencies)
        self.weight = weight
        del self.networks["D"].context["num_classes"]  # an unconditional D ...
        self.networks["D"].context["codes"] = num_classes  # ... with a class head

    def check_discriminator(self, D, fake, noise):
        q = getattr(D, "q", None)
        if q is None:
            raise ValueError("acgan needs a discriminator with a class head (the 'mlp', 'dcgan' and 'infogan' "
                             "discriminators have one)")
        logits, classes = D(fake, codes=True)
        if logits.numel() != 2 or classes.shape != (2, self.num_classes):
            raise ValueError(f"the discriminator's class head gives {tuple(classes.shape)} for 2 samples; "
                             f"expected (2, {self.num_classes})")

    def d_loss(self, batch) -> Terms:
        real, y_real, fake, y_fake = self._batch_and_fakes(batch)
        real_logits, real_cls = self.D(real, codes=True)
        fake_logits, fake_cls = self.D(fake, codes=True)
        ce_real = F.cross_entropy(real_cls.float(), y_real)
        ce_fake = F.cross_entropy(fake_cls.float(), y_fake)
        adversarial, logs = d_adversarial(self.loss, real_logits, fake_logits)
        loss = adversarial + self.weight * (ce_real + ce_fake)
        logs.update(ac_ce_real=ce_real.detach(), ac_acc_real=(real_cls.detach().argmax(1) == y_real).float().mean())
        return Terms(loss, logs, judged={"D": Judged((real,), (fake,), real_logits=real_logits)})

    def g_loss(self, batch) -> Terms:
        real, _ = self._split(batch)
        z, y = self.noise(real.shape[0], real.device)
        fake_logits, fake_cls = self.D(self.G(z, y), codes=True)
        ce = F.cross_entropy(fake_cls.float(), y)
        adversarial, logs = g_adversarial(self.loss, fake_logits, lambda: self.D(real, codes=True)[0])
        G = self.G
        return Terms(adversarial + self.weight * ce, {**logs, "ac_ce_fake": ce.detach()},
                     judged={"G": Judged(fake=(z,), forward=lambda z_: G(z_, y[:len(z_)]))})


def _classes(dataset: Any, num_classes: int | None, labels: str) -> tuple[int, torch.Tensor | None]:
    if labels not in LABELS:
        raise ValueError(f"labels must be one of {', '.join(LABELS)}, got '{labels}'")
    n = num_classes or getattr(dataset, "num_classes", None)
    if not n:
        raise ValueError("needs a dataset with classes (num_classes): mnist, fashion_mnist, cifar10, "
                         "the toy mixtures, image_folder with args: {classes: true}, or hf_dataset with a "
                         "ClassLabel column (a column of class names: cast it with "
                         "dataset.class_encode_column(name))")
    frequencies = None
    stored = getattr(dataset, "labels", None)
    if labels == "data" and isinstance(stored, torch.Tensor):
        frequencies = torch.bincount(stored.cpu(), minlength=n).double()
        frequencies = (frequencies / frequencies.sum()).float()
    return n, frequencies


def conditional(*, loss, z_dim, sample_shape, n_critic, optim, dataset=None, num_classes=None,
                labels: str = "uniform"):
    """Class-conditional GAN: G(z, y) vs D(x, y) (cBN/concat G, projection/concat D)."""
    n, freq = _classes(dataset, num_classes, labels)
    return Conditional(loss, z_dim, sample_shape, n_critic, optim, n, labels, freq)


def acgan(*, loss, z_dim, sample_shape, n_critic, optim, dataset=None, num_classes=None,
          labels: str = "uniform", weight: float = 1.0):
    """AC-GAN (Odena et al. 2017): G(z, y), D with an auxiliary classifier head."""
    n, freq = _classes(dataset, num_classes, labels)
    return ACGAN(loss, z_dim, sample_shape, n_critic, optim, n, labels, freq, weight)


@hookimpl
def ganforge_register_objectives(register):
    register("conditional", conditional)
    register("acgan", acgan)
