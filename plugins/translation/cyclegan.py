"""CycleGAN: unpaired image-to-image translation as a system of four networks.

Zhu, Park, Isola, Efros, "Unpaired Image-to-Image Translation using Cycle-Consistent Adversarial
Networks" (ICCV 2017), https://arxiv.org/abs/1703.10593. Generators G_AB: A -> B and
G_BA: B -> A (ResNet generators), discriminators D_A (real A against G_BA(b)) and D_B (real B
against G_AB(a)), PatchGANs. As in the paper and its code:

- the least-squares loss by default (``loss: lsgan``);
- cycle consistency ``cycle_weight * (|G_BA(G_AB(a)) - a|_1 + |G_AB(G_BA(b)) - b|_1)``, lambda = 10;
- identity ``identity * cycle_weight * (|G_AB(b) - b|_1 + |G_BA(a) - a|_1)``, 0.5 (A and B
  with the same channels; ``identity: 0`` turns it off);
- each discriminator sees fakes from a pool of ``pool_size`` = 50 earlier ones (Shrivastava et
  al. 2017): a new fake goes in while the pool fills; after that, half the time the D sees a
  stored fake, which the new one replaces. The pools are the system's state: checkpointed
  (per process) and restored exactly, and they draw from torch's RNG, which checkpoints keep too;
- optimizers ``G`` (G_AB and G_BA) and ``D`` (D_A and D_B), Adam 2e-4, betas (0.5, 0.999);
  the paper's schedule is ``optim.lr_decay: linear`` with ``lr_decay_start`` at half the steps;
- phases ``G`` (both generators; the discriminators frozen) then ``D`` (both discriminators, on
  the same batch and this step's fakes; penalties apply to D_A and D_B).

ganforge's ``lsgan`` is half the squared error for both players; the paper's code uses the
whole squared error for G, so ``gan_weight: 2`` reproduces its objective exactly (the shipped
recipes set it). D's objective, 0.5 * (real + fake), is the same in both.
"""
from __future__ import annotations

from typing import Any

import torch

from ganforge import hookimpl
from ganforge.plugins.translation import TranslationSystem, arrange, as_rgb, split_batch
from ganforge.system import Judged, Network, Optimizer, Phase, Terms, d_adversarial, g_adversarial

__all__ = ["CycleGAN", "ImagePool"]


class ImagePool:
    """A buffer of up to ``size`` earlier fakes (CycleGAN's image pool), on the fakes' device."""

    def __init__(self, size: int):
        self.size, self.images = size, None

    def __len__(self) -> int:
        return 0 if self.images is None else len(self.images)

    @torch.no_grad()
    def query(self, fakes: torch.Tensor) -> torch.Tensor:
        """What the discriminator sees for this batch of ``fakes`` (updating the pool)."""
        if self.size == 0:
            return fakes
        out = []
        for image in fakes.detach():
            image = image.unsqueeze(0)
            if len(self) < self.size:  # filling: store it, show it
                self.images = image.clone() if self.images is None else torch.cat([self.images, image])
                out.append(image)
            elif torch.rand(()) < 0.5:  # show a stored fake and keep the new one in its place
                i = int(torch.randint(self.size, ()))
                out.append(self.images[i:i + 1].clone())
                self.images[i] = image[0]
            else:
                out.append(image)
        return torch.cat(out)

    def state(self) -> torch.Tensor:
        """The stored fakes, on the CPU (an empty tensor while the pool is empty)."""
        return self.images.cpu() if self.images is not None else torch.zeros(0)

    def load(self, images: torch.Tensor, device: Any) -> None:
        self.images = images.to(device) if images.numel() else None


class CycleGAN(TranslationSystem):
    uses = ("a", "b", "target_ab", "target_ba", "labels_a", "labels_b")

    def __init__(self, loss: Any, dataset: Any, optim: Any, cycle_weight: float = 10.0, identity: float = 0.5,
                 pool_size: int = 50, gan_weight: float = 1.0):
        super().__init__(dataset)
        a, b = self.a_shape, self.b_shape
        for name, value in (("cycle_weight", cycle_weight), ("identity", identity), ("gan_weight", gan_weight)):
            if value < 0:
                raise ValueError(f"{name} is a weight >= 0, got {value}")
        if pool_size < 0:
            raise ValueError(f"pool_size is a number of images >= 0 (0: no pool), got {pool_size}")
        if identity and a[0] != b[0]:
            raise ValueError(f"the identity term needs A and B with the same channels (A has {a[0]}, B {b[0]}); "
                             f"set objective.args.identity=0")
        self.loss, self.cycle_weight, self.identity, self.gan_weight = loss, cycle_weight, identity, gan_weight
        self.pools = {"A": ImagePool(pool_size), "B": ImagePool(pool_size)}
        betas, decay = tuple(optim.betas), optim.weight_decay
        self.networks = {
            "G_AB": Network("generator", {"in_shape": a, "out_shape": b}, ema=True),
            "G_BA": Network("generator", {"in_shape": b, "out_shape": a}, ema=True),
            "D_A": Network("discriminator", {"in_shape": a}),
            "D_B": Network("discriminator", {"in_shape": b}),
        }
        self.optimizers = {"G": Optimizer(["G_AB", "G_BA"], optim.lr_g, betas, decay),
                           "D": Optimizer(["D_A", "D_B"], optim.lr_d, betas, decay)}
        self.phases = [Phase("G", "G", self.g_loss),
                       Phase("D", "D", self.d_loss, new_batch=False, penalize=["D_A", "D_B"])]
        self.directions = {"AtoB": ("G_AB", a, b), "BtoA": ("G_BA", b, a)}
        self._fakes: tuple[torch.Tensor, torch.Tensor] | None = None

    # --- samples: G_AB(a) then G_BA(b); pictures add the reconstruction and any known target
    def generate(self, nets, inputs):
        ab, ba = nets["G_AB"](inputs.a), nets["G_BA"](inputs.b)
        if not inputs.show:
            return torch.cat([ab, ba]) if ab.shape[1:] == ba.shape[1:] else ab
        rows = []
        for x, out, back, target in ((inputs.a, ab, nets["G_BA"](ab), inputs.target_ab),
                                     (inputs.b, ba, nets["G_AB"](ba), inputs.target_ba)):
            rows.append(arrange([x, out, back] + ([target] if target is not None else [])))
        channels = max(r.shape[1] for r in rows)
        return torch.cat([as_rgb(r, channels) for r in rows])

    # --- the phases
    def g_loss(self, batch) -> Terms:
        a, b = split_batch(batch)
        G_AB, G_BA, D_A, D_B = (self.nets[n] for n in ("G_AB", "G_BA", "D_A", "D_B"))
        fake_b, fake_a = G_AB(a), G_BA(b)
        adv_b, logs_b = g_adversarial(self.loss, D_B(fake_b), lambda: D_B(b))  # (real: relativistic losses)
        adv_a, logs_a = g_adversarial(self.loss, D_A(fake_a), lambda: D_A(a))
        adv = adv_b + adv_a
        cycle_a = (G_BA(fake_b).float() - a.float()).abs().mean()
        cycle_b = (G_AB(fake_a).float() - b.float()).abs().mean()
        loss = self.gan_weight * adv + self.cycle_weight * (cycle_a + cycle_b)
        logs = {"g_gan": adv.detach(), "cycle_a": cycle_a.detach(), "cycle_b": cycle_b.detach(),
                "d_fake_g": 0.5 * (logs_a["d_fake_g"] + logs_b["d_fake_g"])}
        if self.identity:
            idt = (G_AB(b).float() - b.float()).abs().mean() + (G_BA(a).float() - a.float()).abs().mean()
            loss = loss + self.identity * self.cycle_weight * idt
            logs["identity"] = idt.detach()
        self._fakes = (fake_a.detach(), fake_b.detach())  # for D's phase of this step
        return Terms(loss, logs)

    def d_loss(self, batch) -> Terms:
        a, b = split_batch(batch)
        if self._fakes is None:  # (only if a plugin reorders the phases)
            with torch.no_grad():
                self._fakes = (self.nets["G_BA"](b), self.nets["G_AB"](a))
        fake_a, fake_b = self.pools["A"].query(self._fakes[0]), self.pools["B"].query(self._fakes[1])
        self._fakes = None
        D_A, D_B = self.nets["D_A"], self.nets["D_B"]
        real_a, real_b = D_A(a), D_B(b)
        loss_a, logs_a = d_adversarial(self.loss, real_a, D_A(fake_a))
        loss_b, logs_b = d_adversarial(self.loss, real_b, D_B(fake_b))
        loss = loss_a + loss_b
        logs = {k: 0.5 * (logs_a[k] + logs_b[k]) for k in ("d_real", "d_fake")}
        return Terms(loss, logs, judged={"D_A": Judged((a,), (fake_a,), real_logits=real_a),
                                         "D_B": Judged((b,), (fake_b,), real_logits=real_b)})

    # --- the pools are persistent state
    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"pool_{d}": p.state() for d, p in self.pools.items()}

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        device = next(self.nets["D_A"].parameters()).device  # (setup() ran before a checkpoint loads)
        for d, pool in self.pools.items():
            if f"pool_{d}" in tensors:
                pool.load(tensors[f"pool_{d}"], device)


def cyclegan(*, loss, optim, dataset, cycle_weight: float = 10.0, identity: float = 0.5, pool_size: int = 50,
             gan_weight: float = 1.0):
    """CycleGAN (Zhu et al. 2017): G_AB, G_BA, D_A, D_B; cycle 10, identity 0.5, pools of 50 fakes."""
    return CycleGAN(loss, dataset, optim, cycle_weight, identity, pool_size, gan_weight)


@hookimpl
def ganforge_register_objectives(register):
    register("cyclegan", cyclegan)
