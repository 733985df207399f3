"""The adversarial-system contract: what an objective plugin hands the engine.

A :class:`GANSystem` says, as data, everything the engine needs to train it:

- ``networks``: named networks (``{"G": Network("generator", ...), "D": Network(...)}``), each
  built from the registry with its own recipe section (``networks.<name>``, or the
  ``generator:`` / ``discriminator:`` shorthand for every network of that kind);
- ``optimizers``: named Adam optimizers, each updating a list of networks with its own
  learning rate, betas and weight decay (the recipe's ``optimizers.<name>`` overrides them);
- ``phases``: the parts of one training step, in order. A phase steps one optimizer; its
  ``trainable`` networks get gradients and every other network of the system is frozen
  (``requires_grad_(False)``: no gradient computed, nothing all-reduced under DDP). It runs
  ``repeats`` times (n_critic), on a fresh batch each time or on the previous phase's batch,
  and the recipe's penalties apply to the discriminators it lists in ``penalize``;
- persistent state (:meth:`GANSystem.state_dict`, e.g. CycleGAN's pool of past fakes),
  checkpointed per process in safetensors and restored exactly;
- which networks keep an EMA copy (``Network(ema=True)``) and how samples are made
  (:meth:`GANSystem.noise`, :meth:`GANSystem.generate`).

The classic GAN is the smallest system: :class:`ganforge.plugins.objectives.Unconditional`
(networks G and D, optimizers G and D, phases ``D`` x n_critic then ``G``).

Each phase's loss is a function ``loss(batch) -> Terms``; it reads the prepared networks from
``system.nets`` (filled by the engine after ``accelerator.prepare``). The engine owns
everything else: devices, Accelerate/DDP, mixed precision (losses run under autocast,
penalties in fp32), freezing, non-finite skips, lazy penalties, EMA, checkpoints and the
CUDA-graph fast path (which needs ``capturable = True`` on the system, its loss and penalties).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["GANSystem", "Judged", "Judgement", "Network", "Optimizer", "Phase", "Terms", "d_adversarial", "feature_matching",
           "g_adversarial", "heads", "logit_sum", "unwrapped"]


@dataclass
class Network:
    """One network of a system.

    :param kind: ``"generator"`` or ``"discriminator"`` (built from those registries; the
        recipe's ``generator:`` / ``discriminator:`` sets every network of the kind), or any
        other kind, e.g. ``"encoder"``, built from the networks registered with
        ``ganforge_register_networks``. Penalties apply to networks of their kind.
    :param context: what ganforge passes its factory besides the recipe's ``args``
        (generators: ``z_dim``, ``out_shape``; discriminators: ``in_shape``; a system may pass
        other shapes, e.g. an image-to-image generator's input shape as ``z_dim``).
    :param ema: keep an exponential moving average of it (``train.ema``); samples use it.
    :param default: the registered part that builds it when the recipe's ``networks.<name>``
        does not (with ``args``), so a recipe need not name it; required for other kinds.
    """

    kind: str
    context: dict[str, Any] = field(default_factory=dict)
    ema: bool = False
    default: str | None = None
    args: dict[str, Any] = field(default_factory=dict)

    @property
    def registry_kind(self) -> str:
        """The registry a network of this kind is built from."""
        return self.kind if self.kind in ("generator", "discriminator") else "network"


@dataclass
class Optimizer:
    """An Adam optimizer over ``networks``; the recipe's ``optimizers.<name>`` overrides
    ``lr``, ``betas`` and ``weight_decay``."""

    networks: Sequence[str]
    lr: float = 2e-4
    betas: Sequence[float] = (0.5, 0.999)
    weight_decay: float = 0.0


@dataclass
class Judged:
    """The inputs a network was given in a phase, for the penalties on it.

    :param real: what a discriminator judged of the real data, one tensor per input it takes
        (``(x,)``; a pair discriminator D(x, z), BiGAN's: ``(x, E(x))``).
    :param fake: the same for generated data (``(G(z),)``, ``(G(z), z)``); for a generator,
        its inputs (``(z,)``: what the path-length penalty differentiates).
    :param forward: the network as the phase called it, taking those inputs (default: the
        network itself); it binds what is not differentiated (a conditional D's labels:
        ``lambda x: D(x, y)``).
    :param real_logits: the discriminator's output on ``real`` as the phase computed it. An
        adaptive augmentation (ADA) reads its statistics from it; without it, from the output
        of the discriminator's call on the very tensor ``real[0]``, and a phase that reports
        reals it never called the discriminator on is an error.
    """

    real: tuple = ()
    fake: tuple = ()
    forward: Callable[..., Any] | None = None
    real_logits: Any = None


def as_judged(value: Judged | tuple) -> Judged:
    """A ``Terms.judged`` entry as :class:`Judged` (the tuple form ``(real, fake[, forward])``
    of plugin API 2's first release is still accepted)."""
    if isinstance(value, Judged):
        return value
    real, fake, *forward = value
    return Judged((real,), (fake,), forward[0] if forward else None)


@dataclass
class Terms:
    """What a phase's loss returns.

    :param loss: the scalar to minimise (penalties are added to it by the engine).
    :param logs: detached scalars to log (averaged over steps and processes).
    :param judged: for each network this phase may penalise (``Phase.penalize``), what it was
        given: a :class:`Judged` (or the short form ``(real, fake)``, ``(real, fake,
        forward)``). Penalties are computed on them.
    :param keep: values the next phase's loss reads as ``system.kept`` for the same run and
        micro-batch (a phase with ``Phase.keeps``: G's output computed once, with its graph,
        in D's phase and trained through in G's, as HiFi-GAN does).
    """

    loss: torch.Tensor
    logs: dict[str, torch.Tensor] = field(default_factory=dict)
    judged: dict[str, tuple] = field(default_factory=dict)
    keep: dict[str, Any] | None = None


@dataclass
class Phase:
    """One part of a training step.

    :param name: logged as ``loss_<name lower-cased>`` (``loss_d``, ``loss_g``); lazy penalties
        count this phase's runs.
    :param optimizer: the optimizer it steps.
    :param loss: ``loss(batch) -> Terms``, run under the recipe's autocast.
    :param trainable: the networks that get gradients (default: the optimizer's); every other
        network of the system is frozen while the phase runs.
    :param repeats: runs per training step (``train.n_critic`` for a critic).
    :param new_batch: draw a fresh batch for each run (else reuse the batch the previous phase
        saw; the first phase of a step always draws one).
    :param penalize: discriminators the recipe's penalties apply to in this phase (their
        inputs come from :attr:`Terms.judged`).
    :param start: the first step (generator steps, from 0) the phase runs at, and ``stop`` the
        step it no longer runs at (``None``: to the end); a float in [0, 1] is a fraction of
        ``train.steps`` (``start=0.2``: after a fifth of the run): a discriminator that starts later
        (BigVGAN's ``freeze_step``, VQGAN's ``disc_start``), a generator-only warm-up. The
        recipe's ``phases.<name>`` overrides them. While a phase does not run, the system's
        other losses can leave out what depends on it (:meth:`GANSystem.runs`).
    :param keeps: networks this phase runs with their gradients on (not frozen, not stepped)
        so that what it keeps (:attr:`Terms.keep`) can be trained through by the next phase on
        the same batch; the next phase's loss reads it as ``system.kept`` (``None`` when this
        phase did not run). Under several processes it needs ``train.accumulate=1`` (DDP
        all-reduces a network once per forward, in the backward that follows it).
    """

    name: str
    optimizer: str
    loss: Callable[[Any], Terms]
    trainable: Sequence[str] | None = None
    repeats: int = 1
    new_batch: bool = True
    penalize: Sequence[str] = ()
    start: int | float = 0
    stop: int | float | None = None
    keeps: Sequence[str] = ()

    def runs_at(self, step: int) -> bool:
        return self.start <= step and (self.stop is None or step < self.stop)


class GANSystem:
    """Base class of the systems objective plugins return (see the module docstring).

    Subclasses set :attr:`networks`, :attr:`optimizers` and :attr:`phases` in ``__init__`` and
    implement :meth:`noise` and :meth:`generate`. Set ``capturable = True`` when every phase
    loss is tensor code only (no ``.item()``, no Python branch on a tensor's value, the same
    shapes every step, random numbers from torch's default generator): the engine may then
    capture the whole step in a CUDA graph.
    """

    capturable = False
    #: how the sampling networks run when samples are made (grids, evaluation, ``ganforge
    #: sample`` / ``translate``): ``"eval"`` (running BatchNorm statistics, no dropout), or
    #: ``"train"``: dropout active and BatchNorm with the batch's own statistics, as pix2pix's
    #: paper tests; running statistics, counters and the random number streams are left as
    #: they were (:func:`ganforge.observe.sampling.sampling_mode`)
    test_mode: str = "eval"
    #: images per row of a sample grid; ``None``: as square as possible
    grid_nrow: int | None = None
    #: the channel counts of the images a discriminator's input holds side by side (pix2pix:
    #: the input's and the output's, e.g. ``(1, 3)``); the recipe's ``augment`` transforms them
    #: alike, each with its own statistics. ``None``: one image
    channel_split: tuple[int, ...] | None = None

    networks: dict[str, Network]
    optimizers: dict[str, Optimizer]
    phases: list[Phase]
    #: the prepared (possibly DDP-wrapped) networks by name, set by the engine before training
    nets: dict[str, nn.Module]
    #: the adversarial loss, when the system uses one (the fast path checks its capturable)
    loss: Any = None

    #: the phases that run in the current step (set by the engine before each step)
    running: frozenset[str] = frozenset()
    #: what the previous phase kept (:attr:`Terms.keep`) for this run and micro-batch, set by
    #: the engine before each call of a phase's loss; ``None`` when it kept nothing
    kept: dict[str, Any] | None = None

    def runs(self, phase: str) -> bool:
        """Whether phase ``phase`` runs in this step (:attr:`Phase.start`/``stop``): e.g. G's loss
        leaves out its adversarial term while the discriminator's phase has not started."""
        return not self.running or phase in self.running

    def network(self, name: str) -> nn.Module:
        """Network ``name`` itself, without the wrappers the engine may put around it (DDP's
        ``.module``, ``torch.compile``'s): to reach a layer (``self.network("G").conv_out.weight``,
        VQGAN's adaptive weight) or a parameter by name, on one process or many. Call the
        network through ``self.nets[name]``, which all-reduces its gradients under DDP."""
        if name not in getattr(self, "nets", {}):
            known = ", ".join(getattr(self, "nets", {})) or "none yet: setup() has not run"
            raise KeyError(f"the system has no prepared network '{name}' (networks: {known})")
        return unwrapped(self.nets[name])

    def setup(self, nets: dict[str, nn.Module]) -> None:
        """Called once with the prepared networks, before the first step and before a
        checkpoint is loaded. The default keeps them in :attr:`nets`."""
        self.nets = nets

    def check(self, nets: dict[str, nn.Module]) -> None:
        """Called once with the freshly built networks (on the CPU, before ``prepare``) to fail
        early with the shapes; raise ``ValueError`` with what is wrong. Optional."""

    def noise(self, n: int, device: torch.device | str = "cpu",
              generator: torch.Generator | None = None) -> Any:
        """Generator inputs for ``n`` independent samples (evaluation, ``ganforge sample``)."""
        raise NotImplementedError

    def grid_noise(self, n: int, device: torch.device | str = "cpu",
                   generator: torch.Generator | None = None) -> Any:
        """Inputs for a sample grid of ``n`` images; by default :meth:`noise`."""
        return self.noise(n, device, generator)

    def generate(self, nets: dict[str, nn.Module], noise: Any) -> torch.Tensor:
        """Samples for ``noise`` from ``nets``: the sampling copies of the networks (the EMA
        copy where one is kept), in eval mode, unwrapped; called under ``torch.no_grad()``."""
        raise NotImplementedError

    def write_samples(self, samples: torch.Tensor, noise: Any, path: Any) -> Any:
        """Write ``samples`` (made from ``noise``) in the system's own form: a picture at ``path``
        (a ``.png`` path) and whatever belongs beside it (a vocoder: the wavs); return the
        picture's path. Called for the training's examples and ``ganforge sample --out X.png``.
        Default: ``None``, and ganforge draws a grid of images (a scatter plot of vectors)."""
        return None

    def labels_of(self, noise: Any) -> torch.Tensor | None:
        """The class labels that ``noise`` asks for (class-conditional systems), so that
        metrics can check them; ``None`` for unconditional systems."""
        return None

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Persistent tensors (a pool of past fakes, counters) saved with each checkpoint,
        one file per process. Default: none."""
        return {}

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state_dict` returned (tensors arrive on the CPU)."""


def unwrapped(module: nn.Module) -> nn.Module:
    """``module`` without DDP / DataParallel / ``torch.compile`` wrappers (Accelerate's
    ``extract_model_from_parallel``, which knows every wrapper Accelerate applies)."""
    from accelerate.utils import extract_model_from_parallel

    return extract_model_from_parallel(module, keep_fp32_wrapper=True, keep_torch_compile=False)


# ----------------------------------------------------------------------- the loss helpers
@dataclass
class Judgement:
    """What a discriminator with several heads returns (multi-scale PatchGAN, HiFi-GAN's
    multi-period and multi-scale discriminators): ``logits``, one logit map per head, and
    ``features``, per head, the intermediate feature maps that feature matching compares. A
    discriminator with one head may keep returning a tensor; the helpers below take both."""

    logits: list[torch.Tensor]
    features: list[list[torch.Tensor]] = field(default_factory=list)


def penalty_kind(fn: Any) -> str:
    """The kind of network a penalty applies to: its ``network_kind`` (default: discriminator)."""
    return getattr(fn, "network_kind", "discriminator")


def heads(out: torch.Tensor | Judgement) -> list[torch.Tensor]:
    """The logit maps of a discriminator's output: ``[out]`` for a tensor."""
    return list(out.logits) if isinstance(out, Judgement) else [out]


def logit_sum(out: torch.Tensor | Judgement) -> torch.Tensor:
    """The sum of every logit (what a gradient penalty differentiates), in fp32."""
    return sum(h.float().sum() for h in heads(out))


def d_adversarial(loss: Any, real: torch.Tensor | Judgement, fake: torch.Tensor | Judgement,
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """A discriminator's adversarial loss on its ``real`` and ``fake`` logits, summed over heads
    (as pix2pixHD and HiFi-GAN sum their discriminators'), and its logs: ``d_real``, ``d_fake``
    (``loss.score``: probabilities for BCE-type losses), averaged over heads."""
    r, f = heads(real), heads(fake)
    total = loss.d_loss(r[0], f[0])
    for a, b in zip(r[1:], f[1:], strict=True):
        total = total + loss.d_loss(a, b)
    return total, {"d_real": _mean_score(loss, r), "d_fake": _mean_score(loss, f)}


def g_adversarial(loss: Any, fake: torch.Tensor | Judgement, real: Callable[[], Any] | None = None,
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """A generator's adversarial term on the discriminator's logits for its fakes, summed over
    heads, and its log ``d_fake_g``. A relativistic loss (``uses_real_logits``) also needs D's
    logits on real data: ``real()`` computes them, called here without gradients (D is frozen
    in G's phase, so they are constants for G); other losses never call it."""
    f = heads(fake)
    if getattr(loss, "uses_real_logits", False):
        if real is None:
            from ganforge.errors import ConfigError

            raise ConfigError(f"loss '{type(loss).__name__}' needs the discriminator's logits on real data in G's "
                              f"phase, and this system does not pass them (g_adversarial(loss, fake, real=lambda: "
                              f"D(x))); choose another loss, e.g. bce or hinge")
        with torch.no_grad():
            r = heads(real())
        parts = [loss.g_loss(a, b) for a, b in zip(f, r, strict=True)]
    else:
        parts = [loss.g_loss(a) for a in f]
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return total, {"d_fake_g": _mean_score(loss, f)}


def feature_matching(real: Judgement, fake: Judgement, pix2pixhd: bool = False) -> torch.Tensor:
    """Feature matching (Salimans et al. 2016; pix2pixHD, MelGAN, HiFi-GAN): the mean absolute
    difference between a discriminator's features of real and of generated data, in fp32 (the
    real features are targets, not trained through). Summed over layers and heads (HiFi-GAN's
    form), or with ``pix2pixhd`` weighted as pix2pixHD weighs it: each discriminator's layers by
    4 / (its number of feature layers), averaged over the discriminators (1 / num_D)."""
    if not real.features or len(real.features) != len(fake.features):
        raise ValueError("feature matching needs a discriminator that returns Judgement(features=...) for both")
    total = None
    for r_layers, f_layers in zip(real.features, fake.features, strict=True):
        weight = 4.0 / len(f_layers) / len(fake.features) if pix2pixhd else 1.0
        for r, f in zip(r_layers, f_layers, strict=True):
            term = (r.detach().float() - f.float()).abs().mean()
            term = term * weight if pix2pixhd else term
            total = term if total is None else total + term
    return total


def _mean_score(loss: Any, logits: list[torch.Tensor]) -> torch.Tensor:
    scores = [loss.score(h.detach().float()).mean() for h in logits]
    return scores[0] if len(scores) == 1 else torch.stack(scores).mean()
