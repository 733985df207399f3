"""A test plugin: the shipped CycleGAN system, recording in each phase whether the networks
the phase does not train are frozen and their gradients left as they were (for the 2-process
test in test_translation.py)."""
from __future__ import annotations

import torch

import ganforge
from ganforge.plugins.translation.cyclegan import CycleGAN

WATCH: list[tuple[str, bool]] = []  # (what, held)


class WatchedCycleGAN(CycleGAN):
    snap: dict = {}

    def _grads(self, names):
        return [None if p.grad is None else p.grad.clone() for n in names for p in self.nets[n].parameters()]

    def _same(self, key, names):
        if key in self.snap:
            now = self._grads(names)
            WATCH.append((f"{key} untouched", all(
                (x is None and y is None) or (x is not None and y is not None and torch.equal(x, y))
                for x, y in zip(self.snap[key], now, strict=True))))

    def _frozen(self, phase, others):
        WATCH.append((f"{phase}: others frozen",
                      all(not p.requires_grad for n in others for p in self.nets[n].parameters())))

    def g_loss(self, batch):
        self._frozen("G", ["D_A", "D_B"])
        self._same("G grads", ["G_AB", "G_BA"])  # the last D phase left G's gradients alone
        self.snap["D grads"] = self._grads(["D_A", "D_B"])
        return super().g_loss(batch)

    def d_loss(self, batch):
        self._frozen("D", ["G_AB", "G_BA"])
        self._same("D grads", ["D_A", "D_B"])  # this step's G phase left D's gradients alone
        self.snap["G grads"] = self._grads(["G_AB", "G_BA"])
        return super().d_loss(batch)


@ganforge.hookimpl
def ganforge_register_objectives(register):
    register("cyclegan_watch", lambda *, loss, optim, dataset, pool_size=4:
             WatchedCycleGAN(loss, dataset, optim, pool_size=pool_size))
