"""Augmenting what discriminators see: the engine's side of the ``augment`` part kind.

A recipe's ``augment: {name: diffaugment}`` (or ``ada``) is built from the registry
(``ganforge_register_augments``) and installed on every discriminator network of the system,
whatever the system: a forward pre-hook transforms the image input of each call the network
makes in training mode. So every image a discriminator judges while training, real or fake, in
every phase (its own and the generator's), goes through the augmentation, and penalties (R1,
R2, GP) differentiate through it, as DiffAugment and StyleGAN2-ADA do. Nothing else changes:
sampling never calls a discriminator, and the film runs it in eval mode, unaugmented.

Conditional discriminators keep their other inputs (labels) as they are; a system whose
discriminator input holds several images side by side along channels says so with
``GANSystem.channel_split`` (pix2pix: the input's and output's channel counts), handed to the
augmentation as ``augment(x, split=...)``: they get the same transform.

An adaptive augmentation (ADA) also observes the discriminator's logits on the reals each
phase judged (the tensors a phase returns in ``Terms.judged``; the output of the call made on
that very tensor) and updates itself after each step, outside any CUDA graph.
"""
from __future__ import annotations

import contextlib
import inspect
from typing import Any

import torch
from torch import nn

from ganforge.contract.system import as_judged, heads
from ganforge.errors import ConfigError, GanforgeError

__all__ = ["AugmentHooks", "channel_split", "install"]


class AugmentHooks:
    """The recipe's augmentation installed on the discriminators ``names`` of ``nets``."""

    def __init__(self, augment: Any, nets: dict[str, nn.Module], names: list[str],
                 split: tuple[int, ...] | None = None):
        self.augment, self.names = augment, names
        self.split = {} if split is None else {"split": tuple(split)}
        self.adaptive = getattr(augment, "adaptive", False) is True
        self.calls: dict[str, list[tuple[torch.Tensor, Any]]] = {n: [] for n in names}  # (input, output)
        self._pending: dict[str, list[torch.Tensor]] = {n: [] for n in names}
        self.recording = False  # inside a phase's loss (not its penalties)
        self.handles = []
        for name in names:
            module = nets[name]
            self.handles.append(module.register_forward_pre_hook(self._pre(name), with_kwargs=True))
            if self.adaptive:
                self.handles.append(module.register_forward_hook(self._post(name)))

    def _pre(self, name: str):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple | None:
            """The image input is the first positional argument or, called by keyword, the first
            keyword argument's tensor: D(x, y) and D(x=x, y=y) are augmented alike."""
            if not module.training:
                return None
            if args:
                key, x = None, args[0]
            elif kwargs:
                key, x = next(iter(kwargs.items()))
            else:
                return None
            if not torch.is_tensor(x) or x.dim() != 4:
                return None
            if self.recording:
                self._pending[name].append(x)
            out = self.augment(x, **self.split)
            return ((out, *args[1:]), kwargs) if key is None else (args, {**kwargs, key: out})
        return hook

    def _post(self, name: str):
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            if self._pending[name]:
                self.calls[name].append((self._pending[name].pop(), output))
        return hook

    @contextlib.contextmanager
    def watch(self):
        """Around a phase's loss: an adaptive augmentation's hooks keep each call's output."""
        self.recording = self.adaptive
        try:
            yield
        finally:
            self.recording = False

    def observe(self, judged: dict[str, Any], system: str = "the objective") -> None:
        """After a phase's loss: hand an adaptive augmentation the discriminators' detached
        logits on the reals the phase judged: ``Judged.real_logits`` where the phase gives them
        (the built-in systems do), else the output of the discriminator's call on the very
        tensor reported as ``Judged.real`` (the first output, for a D with several heads). A
        phase that judged reals for an augmented discriminator it was never seen calling on
        them is an error: the augmentation would otherwise adapt to nothing, silently."""
        if not self.adaptive:
            return
        for name, calls in self.calls.items():
            entry = judged.get(name)
            j = as_judged(entry) if entry is not None else None
            real = j.real[0] if j is not None and j.real else None
            logits = j.real_logits if j is not None else None
            if logits is None:
                logits = next((out for x, out in calls if x is real), None) if real is not None else None
            calls.clear()
            self._pending[name].clear()
            if logits is not None:
                logits = logits[0] if isinstance(logits, (tuple, list)) else logits  # (D, code head)
                maps = [h.detach().float().reshape(h.shape[0], -1) for h in heads(logits)]
                self.augment.observe(torch.cat(maps, 1))  # several heads: every logit of an image
            elif real is not None:
                raise GanforgeError(
                    f"augment: {system} reports the reals discriminator '{name}' judged (Terms.judged), but "
                    f"'{name}' was not called on that tensor in the phase, so the adaptive augmentation cannot "
                    f"see its logits on them; call {name} on the very tensor returned as judged real, or return "
                    f"Judged(..., real_logits=...)")

    def logs(self) -> dict[str, torch.Tensor]:
        return self.augment.logs() if self.adaptive else {}

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def install(recipe: Any, system: Any, nets: dict[str, nn.Module], sample_shape: tuple[int, ...],
            registry: Any) -> AugmentHooks | None:
    """Build the recipe's augmentation and install it on the system's discriminators (the
    unwrapped modules in ``nets``); ``None`` when the recipe has none."""
    part = recipe.augment
    if part is None or not part.name:
        return None
    augment = registry.build("augment", part.name, part.args)  # (an unknown name or argument first)
    if len(sample_shape) != 3:
        raise ConfigError(f"augment '{part.name}' transforms images (C, H, W), but this run's samples have shape "
                          f"{tuple(sample_shape)}; remove augment from the recipe")
    names = [n for n, spec in system.networks.items() if spec.kind == "discriminator"]
    if not names:
        raise ConfigError(f"augment '{part.name}': objective '{recipe.objective.name}' has no discriminator "
                          f"network to augment the inputs of")
    return AugmentHooks(augment, nets, names, channel_split(system, augment, part.name))


def channel_split(system: Any, augment: Any, name: str) -> tuple[int, ...] | None:
    """The system's ``channel_split``, checked: the augmentation must take ``split`` to be
    handed one, and the renamed ``images_per_input`` is refused with what to set instead."""
    if getattr(system, "images_per_input", 1) != 1:
        raise ConfigError(f"objective {type(system).__name__} sets images_per_input, which is now channel_split: "
                          f"the channel count of each image side by side in its discriminator's input (pix2pix's "
                          f"RGB pairs: (3, 3)); set that instead")
    split = getattr(system, "channel_split", None)
    if split is None:
        return None
    try:
        takes = inspect.signature(augment).parameters
    except (TypeError, ValueError):  # (a builtin or C callable: assume the documented contract)
        takes = {"split": None}
    if "split" not in takes:
        raise ConfigError(f"augment '{name}' takes no split argument, and objective {type(system).__name__}'s "
                          f"discriminator judges {len(split)} images side by side (channels {tuple(split)}) that must "
                          f"get the same transform: give its __call__ a split=None argument (docs/writing-plugins.md, "
                          f"Augment)")
    return tuple(int(c) for c in split)
