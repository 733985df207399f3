"""A test plugin (no engine edit): a CycleGAN-shaped system of four networks on 2-D points.

Domain A is the dataset; domain B is A mapped by a fixed rotation and scale, drawn from another
part of the batch (unpaired). Networks: generators G_AB and G_BA, discriminators D_A and D_B;
optimizers ``G`` (both generators) and ``D`` (both discriminators); phases ``G`` (fresh batch,
adversarial + cycle loss) then ``D`` (the same batch, fakes mixed with a pool of past fakes,
penalties on both discriminators). The pools are persistent state, checkpointed per rank.

``WATCH`` records, per phase run, whether the networks the phase does not train were frozen
and whether their gradients were left as they were.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

import ganforge
from ganforge.system import GANSystem, Network, Optimizer, Phase, Terms

ROTATE = torch.tensor([[0.0, -1.5], [1.5, 0.0]])
WATCH: list[tuple[str, bool, bool]] = []  # (phase, others frozen, others' grads untouched)


class TwoWay(GANSystem):
    def __init__(self, loss, sample_shape, pool_size: int = 16, cycle: float = 10.0):
        d = tuple(sample_shape)
        self.loss, self.cycle, self.pool_size = loss, cycle, pool_size
        self.networks = {
            "G_AB": Network("generator", {"z_dim": d[0], "out_shape": d}, ema=True),
            "G_BA": Network("generator", {"z_dim": d[0], "out_shape": d}),
            "D_A": Network("discriminator", {"in_shape": d}),
            "D_B": Network("discriminator", {"in_shape": d}),
        }
        self.optimizers = {"G": Optimizer(["G_AB", "G_BA"], 2e-4, (0.5, 0.999)),
                           "D": Optimizer(["D_A", "D_B"], 4e-4, (0.5, 0.999))}
        self.phases = [Phase("G", "G", self.g_loss),
                       Phase("D", "D", self.d_loss, new_batch=False, penalize=["D_A", "D_B"])]
        self.pools = {"A": torch.zeros(pool_size, *d), "B": torch.zeros(pool_size, *d)}
        self.filled = torch.zeros((), dtype=torch.long)
        self._snap: dict[str, list] = {}

    def setup(self, nets):
        super().setup(nets)
        device = next(nets["G_AB"].parameters()).device
        self.pools = {k: v.to(device) for k, v in self.pools.items()}

    # --- data: A from the first half of the batch, B (mapped) from the second: unpaired
    @staticmethod
    def _domains(batch):
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        half = x.shape[0] // 2
        return x[:half], x[half:] @ ROTATE.to(x.device)

    def _grads(self, names):
        return [p.grad.clone() if p.grad is not None else None for n in names for p in self.nets[n].parameters()]

    def _frozen(self, phase, others):
        """In ``phase``, the networks it does not train are frozen."""
        WATCH.append((phase, all(not p.requires_grad for n in others for p in self.nets[n].parameters()), True))

    def _untouched(self, what, key, names):
        """``names``' gradients are still those snapshotted under ``key``."""
        if key in self._snap:
            now = self._grads(names)
            same = all((x is None and y is None) or (x is not None and y is not None and torch.equal(x, y))
                       for x, y in zip(self._snap[key], now, strict=True))
            WATCH.append((what, True, same))

    def g_loss(self, batch) -> Terms:
        self._frozen("G", ["D_A", "D_B"])
        self._untouched("D left G", "G", ["G_AB", "G_BA"])  # the last D phase did not touch G's gradients
        self._snap["D"] = self._grads(["D_A", "D_B"])
        a, b = self._domains(batch)
        G_AB, G_BA, D_A, D_B = (self.nets[n] for n in ("G_AB", "G_BA", "D_A", "D_B"))
        fake_b, fake_a = G_AB(a), G_BA(b)
        adv = self.loss.g_loss(D_B(fake_b)) + self.loss.g_loss(D_A(fake_a))
        cycle = F.l1_loss(G_BA(fake_b), a) + F.l1_loss(G_AB(fake_a), b)
        self.fakes = {"A": fake_a.detach(), "B": fake_b.detach()}
        return Terms(adv + self.cycle * cycle, {"cycle": cycle.detach(), "adv_g": adv.detach()})

    def _pool(self, key, fakes):
        """CycleGAN's image pool: until full, store and return the new fakes; then each is
        swapped, with probability 1/2, for a random stored one."""
        pool = self.pools[key]
        n = fakes.shape[0]
        if int(self.filled) < self.pool_size:
            take = min(n, self.pool_size - int(self.filled))
            pool[int(self.filled):int(self.filled) + take] = fakes[:take]
            return fakes
        swap = torch.rand(n, device=fakes.device) < 0.5
        idx = torch.randint(self.pool_size, (n,), device=fakes.device)
        out = torch.where(swap[:, None], pool[idx], fakes)
        pool[idx[swap]] = fakes[swap]
        return out

    def d_loss(self, batch) -> Terms:
        self._frozen("D", ["G_AB", "G_BA"])
        self._untouched("G left D", "D", ["D_A", "D_B"])  # the G phase did not touch D's gradients
        self._snap["G"] = self._grads(["G_AB", "G_BA"])
        a, b = self._domains(batch)
        fake_a, fake_b = self._pool("A", self.fakes["A"]), self._pool("B", self.fakes["B"])
        self.filled = torch.clamp(self.filled + fake_a.shape[0], max=self.pool_size)
        D_A, D_B = self.nets["D_A"], self.nets["D_B"]
        loss = self.loss.d_loss(D_A(a), D_A(fake_a)) + self.loss.d_loss(D_B(b), D_B(fake_b))
        return Terms(loss, {}, judged={"D_A": (a, fake_a), "D_B": (b, fake_b)})

    def noise(self, n, device="cpu", generator=None):
        return torch.randn(n, 2, device=device, generator=generator) * 2

    def generate(self, nets, noise):
        return nets["G_AB"](noise)

    def state_dict(self):
        return {"pool_A": self.pools["A"], "pool_B": self.pools["B"], "filled": self.filled}

    def load_state_dict(self, tensors):
        for key in ("A", "B"):
            self.pools[key].copy_(tensors[f"pool_{key}"])
        self.filled = tensors["filled"].clone()


@ganforge.hookimpl
def ganforge_register_objectives(register):
    register("twoway_test", lambda *, loss, sample_shape, pool_size=16: TwoWay(loss, sample_shape, pool_size))


#: the recipe overrides that train it on toy_grid
OVERRIDES = ["objective=twoway_test", "generator={name: mlp, args: {hidden: [32, 32], batchnorm: false}}",
             "discriminator={name: mlp, args: {hidden: [32, 32]}}", "networks={D_B: {name: mlp, args: {hidden: [16]}}}",
             "optimizers={D: {lr: 5.0e-4}}", "penalties=[{name: r1, weight: 0.1, every: 2}]",
             "data.args={n: 2048}", "data.batch_size=64", "train.ema=0.9", "optim.lr_decay=none",
             "log.progress=false", "metrics=[]", "log.sample_every=0", "log.every=2"]
