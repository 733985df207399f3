"""From a recipe to parts: the system, its networks and its optimizers (used by the engine, the
CLI's ``sample``/``eval`` and the benchmark, so all three build exactly the same thing)."""
from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ganforge.recipe.types import Part, Recipe
from ganforge.errors import ConfigError, PluginError, did_you_mean
from ganforge.contract.manager import Registry
from ganforge.contract.system import GANSystem, penalty_kind

__all__ = ["build_networks", "build_system", "network_parts", "sync_bn_split", "use_channels_last"]

_UPGRADE = "docs/writing-plugins.md, 'Upgrading from plugin API 1'"


def build_system(recipe: Recipe, registry: Registry, sample_shape: tuple[int, ...],
                 dataset: Any = None, num_classes: int | None = None) -> GANSystem:
    """The recipe's objective: a :class:`GANSystem` built by its plugin, with its loss, and
    checked for consistency (every name it uses exists; the recipe's per-network and
    per-optimizer sections name things it has). ``num_classes``: the data's classes (from
    ``dataset`` when given; a checkpoint records it for sampling without the data)."""
    name = recipe.objective.name
    entry = registry.get("objective", name)
    params = inspect.signature(entry.factory).parameters
    if "generator" in params or "discriminator" in params:
        raise PluginError(
            f"objective '{name}' ({entry.provider}) is written for ganforge plugin API 1: its factory "
            f"takes built generator/discriminator models. In API 2 an objective returns a GANSystem "
            f"that declares its networks, optimizers and phases; see {_UPGRADE}")
    loss = registry.build("loss", recipe.loss.name, recipe.loss.args)
    if num_classes is None:
        num_classes = getattr(dataset, "num_classes", None)
    system = registry.build("objective", name, recipe.objective.args, loss=loss, z_dim=recipe.train.z_dim,
                            sample_shape=tuple(sample_shape), n_critic=recipe.train.n_critic,
                            optim=recipe.optim, dataset=dataset, num_classes=num_classes)
    missing = [a for a in ("networks", "optimizers", "phases", "generate", "noise") if not hasattr(system, a)]
    if missing:
        raise PluginError(f"objective '{name}' ({entry.provider}) returned a {type(system).__name__} "
                          f"without {', '.join(missing)}: an objective must return a "
                          f"ganforge.contract.system.GANSystem (see {_UPGRADE})")
    if getattr(system, "loss", None) is None:
        system.loss = loss
    _check_system(name, system, recipe, registry)
    return system


def _unknown(what: str, names: Iterable[str], known: Iterable[str], where: str) -> None:
    known = list(known)
    for n in names:
        if n not in known:
            raise ConfigError(f"{where} names {what} '{n}', but the system has {', '.join(known) or 'none'}."
                              f"{did_you_mean(n, known)}")


def _check_system(name: str, system: GANSystem, recipe: Recipe, registry: Registry) -> None:
    nets, opts = system.networks, system.optimizers
    where = f"objective '{name}'"
    for o_name, o in opts.items():
        _unknown("network", o.networks, nets, f"{where}: optimizer '{o_name}'")
    if not system.phases:
        raise PluginError(f"{where} declares no phases")
    for phase in system.phases:
        if phase.optimizer not in opts:
            raise PluginError(f"{where}: phase '{phase.name}' steps optimizer '{phase.optimizer}', "
                              f"but the system's optimizers are {', '.join(opts)}")
        _unknown("network", [*(phase.trainable or ()), *phase.penalize], nets, f"{where}: phase '{phase.name}'")
        if phase.repeats < 1:
            raise PluginError(f"{where}: phase '{phase.name}' repeats {phase.repeats} times; it must be >= 1")
    for n, spec in nets.items():
        if not (isinstance(spec.kind, str) and spec.kind.isidentifier()):
            raise PluginError(f"{where}: network '{n}' has kind {spec.kind!r}; a kind is a name (generator, "
                              f"discriminator, or another such as encoder)")
        if spec.registry_kind == "network" and spec.default is None and n not in recipe.networks:
            raise ConfigError(f"network '{n}' ({spec.kind}) of {where} has no default; name the network that "
                              f"builds it: networks: {{{n}: {{name: ...}}}} (registered networks: "
                              f"{', '.join(registry.names('network')) or 'none'})")
    _unknown("network", recipe.networks, nets, "the recipe's 'networks' section")
    for kind in ("generator", "discriminator"):  # a section no network is built from: refused, never ignored
        section = getattr(recipe, kind)
        if section == getattr(Recipe(), kind) or section_used(recipe, system, kind):
            continue
        those = [n for n, spec in nets.items() if spec.kind == kind]
        detail = (f"its {kind}s ({', '.join(those)}) are each set under networks.<name>, e.g. networks: "
                  f"{{{those[0]}: {{name: {section.name}, args: {{...}}}}}}" if those else f"it has no {kind}")
        raise ConfigError(f"the recipe's '{kind}: {section.name}' section is used by no network of {where}: {detail}; "
                          f"'ganforge plugins --args {name}' lists its networks")
    _unknown("optimizer", recipe.optimizers, opts, "the recipe's 'optimizers' section")
    _unknown("phase", recipe.phases, [p.name for p in system.phases], "the recipe's 'phases' section")
    steps = recipe.train.steps
    for phase in system.phases:  # the recipe's phases.<name> over the system's start/stop
        own = recipe.phases.get(phase.name)
        for key in ("start", "stop"):
            value = getattr(own, key) if own is not None else None
            value = getattr(phase, key) if value is None else value
            if isinstance(value, float) and not 0.0 <= value <= 1.0:
                raise ConfigError(f"phase '{phase.name}' has {key} {value}: a step is a whole number, and a "
                                  f"fraction of train.steps is within [0, 1]")
            setattr(phase, key, round(value * steps) if isinstance(value, float) else value)
        if not 0 <= phase.start < steps or phase.stop is not None and not phase.start < phase.stop:
            raise ConfigError(f"phase '{phase.name}' runs from step {phase.start} to {phase.stop or 'the end'}; "
                              f"it needs 0 <= start < train.steps ({steps}) and start < stop (phases.{phase.name}: "
                              f"{{start: N, stop: M}}, steps or fractions of train.steps)")
    for step in sorted({0, *(p.start for p in system.phases), *(p.stop for p in system.phases if p.stop)}):
        if step < steps and not any(p.runs_at(step) for p in system.phases):
            raise ConfigError(f"no phase runs at step {step} (phases: " + ", ".join(
                f"{p.name} {p.start}-{p.stop or 'end'}" for p in system.phases) + "); every step needs one")
    penalized = sorted({n for p in system.phases for n in p.penalize})
    for i, p in enumerate(recipe.penalties):
        _unknown("network", p.networks, penalized or ["(no phase penalises one)"], f"penalties.{i}.networks")
    if recipe.penalties and not penalized:
        raise ConfigError(f"the recipe has penalties, but {where} penalises no discriminator in any phase")


def section_used(recipe: Recipe, system: GANSystem, kind: str) -> bool:
    """Whether the recipe's ``generator:`` / ``discriminator:`` section (``kind``) builds a network
    of ``system``: one of that kind with no default part that ``networks.<name>`` does not name."""
    own = recipe.networks
    return any(spec.kind == kind and not spec.default and not (n in own and own[n].name)
               for n, spec in system.networks.items())


def network_parts(recipe: Recipe, system: GANSystem) -> dict[str, Part]:
    """Which registered part builds each network: ``networks.<name>`` when the recipe has it,
    else the system's ``default`` for it, else the ``generator:`` / ``discriminator:``
    shorthand for its kind. ``networks.<name>`` without a name sets arguments of that default."""
    out = {}
    for n, spec in system.networks.items():
        default = Part(spec.default, dict(spec.args)) if spec.default else getattr(recipe, spec.kind)
        own = recipe.networks.get(n)
        if own is not None and not own.name:  # (networks.E: {args: ...}: the default part, these args over its)
            own = Part(default.name, {**default.args, **own.args})
        out[n] = own or default
    return out


def build_networks(recipe: Recipe, registry: Registry, system: GANSystem, *, check: bool = True) -> dict[str, nn.Module]:
    """Every network of ``system`` from the registry, in train mode, checked on a tiny batch
    (``check=False``: not run, e.g. when built on the meta device to compare shapes)."""
    nets = {}
    for n, part in network_parts(recipe, system).items():
        spec = system.networks[n]
        _check_context(recipe, registry, n, spec, part)
        try:
            nets[n] = registry.build(spec.registry_kind, part.name, part.args, **spec.context)
        except ConfigError as err:
            raise ConfigError(f"network '{n}': {err}") from None
    if not check:
        return nets
    for module in nets.values():
        module.eval()
    try:
        system.check(nets)
    except ValueError as err:
        parts = ", ".join(f"{n}={p.name}" for n, p in network_parts(recipe, system).items())
        raise ConfigError(f"objective '{recipe.objective.name}' with networks {parts}: {err}") from None
    for module in nets.values():
        module.train()
    return nets


def _check_context(recipe: Recipe, registry: Registry, name: str, spec: Any, part: Part) -> None:
    """A network that needs what its objective does not give (an image-to-image U-Net under
    the unconditional objective, a noise generator under pix2pix) is one clear error."""
    params = inspect.signature(registry.get(spec.registry_kind, part.name).factory).parameters
    needed = [p for p, v in params.items() if v.default is inspect.Parameter.empty
              and v.kind in (v.KEYWORD_ONLY, v.POSITIONAL_OR_KEYWORD) and p not in spec.context and p not in part.args]
    if needed:
        raise ConfigError(
            f"network '{name}': {spec.kind} '{part.name}' needs {', '.join(needed)}, which neither objective "
            f"'{recipe.objective.name}' gives its {spec.kind}s (it gives {', '.join(spec.context) or 'nothing'}) "
            f"nor the recipe sets in its args; choose a {spec.kind} made for this objective "
            f"(`ganforge plugins` lists them) or set the argument")


def use_channels_last(setting: bool | str, nets: dict[str, nn.Module], device: torch.device) -> bool:
    """``train.channels_last``: on for conv models on CUDA (auto), or as set."""
    convs = (nn.Conv2d, nn.ConvTranspose2d)
    has_conv = any(isinstance(m, convs) for net in nets.values() for m in net.modules())
    return setting is True or (setting == "auto" and has_conv and device.type == "cuda")


def sync_bn_split(recipe: Recipe, system: GANSystem, nets: dict[str, nn.Module],
                  penalties: list | None = None) -> tuple[list[str], dict[str, str]]:
    """``train.sync_bn``: which networks get SyncBatchNorm (BatchNorm statistics over every
    process, as BigGAN syncs its generator's), and which keep per-process BatchNorm and why. A
    network a recipe penalty differentiates (R1, GP: a gradient of D's output, then a backward
    through it) keeps its own: SyncBatchNorm has no double backward."""
    kinds = {id(p): penalty_kind(fn) for p, fn in penalties or []}
    penalised = {n: p.name for p in recipe.penalties for ph in system.phases for n in ph.penalize
                 if (not p.networks or n in p.networks)
                 and kinds.get(id(p), "discriminator") == system.networks[n].kind}
    with_bn = [n for n, m in nets.items() if any(isinstance(x, nn.modules.batchnorm._BatchNorm) for x in m.modules())]
    convert = [n for n in with_bn if n not in penalised]
    kept = {n: f"penalty '{penalised[n]}' differentiates it twice and SyncBatchNorm has no double backward"
            for n in with_bn if n in penalised}
    return convert, kept
