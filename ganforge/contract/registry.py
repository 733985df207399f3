"""The registry: every part the loaded plugins registered, by kind and name, and the
``register`` callable component hooks receive (see :mod:`ganforge.contract.manager` for loading)."""
from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ganforge.errors import ConfigError, PluginError, UnknownNameError, did_you_mean

ENV_DISABLE_PLUGINS = "GANFORGE_DISABLE_PLUGINS"

#: Plural of each kind, for messages and listings.
PLURALS = {"loss": "losses", "penalty": "penalties"}

#: Part kinds and the hook that registers each.
KINDS: dict[str, str] = {
    "generator": "ganforge_register_generators",
    "discriminator": "ganforge_register_discriminators",
    "network": "ganforge_register_networks",  # networks of the other kinds a system declares (an encoder)
    "loss": "ganforge_register_losses",
    "penalty": "ganforge_register_penalties",
    "objective": "ganforge_register_objectives",
    "dataset": "ganforge_register_datasets",
    "metric": "ganforge_register_metrics",
    "augment": "ganforge_register_augments",
}


@dataclass(frozen=True)
class PluginInfo:
    """Where a loaded plugin came from."""

    name: str
    module: str
    distribution: str | None = None
    version: str | None = None


# what ganforge itself passes to each kind's factory (when it takes them), never a recipe's args
CONTEXT = {
    "dataset": ("root", "download"),
    "objective": ("loss", "z_dim", "sample_shape", "n_critic", "optim", "dataset", "num_classes"),
    "metric": ("dataset",),
    "generator": ("z_dim", "out_shape", "in_shape", "num_classes"),
    "discriminator": ("in_shape", "num_classes"),
}


def _plain(value: Any) -> bool:
    """A value JSON and YAML show as it is."""
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


@dataclass(frozen=True)
class Entry:
    """One registered part."""

    kind: str
    name: str
    factory: Callable[..., Any]
    description: str
    plugin: PluginInfo

    def arguments(self) -> list[dict[str, Any]]:
        """The factory's keyword arguments: ``name``, ``default`` (``None`` and ``required``
        when it has none) and ``context`` (ganforge supplies it; a recipe does not set it)."""
        out = []
        for p in inspect.signature(self.factory).parameters.values():
            if p.kind not in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD):
                continue
            required = p.default is inspect.Parameter.empty
            default = None if required else p.default
            out.append({"name": p.name, "default": default if _plain(default) else repr(default),
                        "required": required, "context": p.name in CONTEXT.get(self.kind, ())})
        return out

    @property
    def provider(self) -> str:
        """'plugin (distribution version)' for messages and catalogues."""
        p = self.plugin
        if p.distribution:
            return f"plugin '{p.name}' ({p.distribution} {p.version})"
        return f"plugin '{p.name}' ({p.module})"


def owner_of(frame: Any, owners: dict[Any, list[tuple[Any, PluginInfo]]]) -> tuple[Any, PluginInfo] | None:
    """The (plugin, info) whose hook implementation ``frame`` runs, if any (a class registered
    as several plugins is told apart by the frame's ``self``)."""
    candidates = owners.get(frame.f_code)
    if not candidates:
        return None
    me = frame.f_locals.get("self")
    return next(((p, i) for p, i in candidates if p is me), candidates[0])


class _CallerInfo:
    """Which plugin is registering: the one whose hook implementation is on the call stack."""

    def __init__(self, owners: dict[Any, list[tuple[Any, PluginInfo]]]):
        self.owners = owners

    def find(self) -> PluginInfo:
        frame = sys._getframe(2)
        while frame is not None:
            found = owner_of(frame, self.owners)
            if found:
                return found[1]
            frame = frame.f_back
        return PluginInfo("unknown", "unknown")


class Register:
    """The ``register`` callable handed to component hooks."""

    def __init__(self, registry: Registry, kind: str, caller: _CallerInfo | PluginInfo):
        self._registry = registry
        self._kind = kind
        self._caller = caller

    @property
    def _plugin(self) -> PluginInfo:
        return self._caller.find() if isinstance(self._caller, _CallerInfo) else self._caller

    def __call__(
        self, name: str, factory: Callable[..., Any], description: str | None = None
    ) -> None:
        """Register ``factory`` under ``name``.

        :param name: the name recipes use; unique per kind across all plugins.
        :param factory: called with keyword arguments (see the hook's documentation).
        :param description: one line for ``ganforge plugins``; defaults to the first line of
            the factory's docstring.
        """
        plugin = self._plugin
        if not isinstance(name, str) or not name:
            raise PluginError(f"{plugin.name}: register() needs a non-empty name string")
        if not callable(factory):
            raise PluginError(f"{plugin.name}: {self._kind} '{name}' factory is not callable")
        if description is None:
            doc = (inspect.getdoc(factory) or "").strip()
            description = " ".join(doc.split("\n\n")[0].split())  # first paragraph
        self._registry._add(Entry(self._kind, name, factory, description, plugin))


class Registry:
    """Every part the loaded plugins registered, by kind and name."""

    def __init__(self, failed: dict[str, str] | None = None):
        self._entries: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}
        self.failed = dict(failed or {})

    def _add(self, entry: Entry) -> None:
        table = self._entries[entry.kind]
        if entry.name in table:
            other = table[entry.name]
            if other.plugin is entry.plugin:  # one plugin's hook called register() twice
                raise PluginError(
                    f"{entry.provider} registers "
                    f"{entry.kind} '{entry.name}' twice in its hook; call register() once per name")
            first, second = sorted((other, entry), key=lambda e: e.plugin.distribution != "ganforge")
            raise PluginError(
                f"{entry.kind} '{entry.name}' is registered twice: by {first.provider} and by "
                f"{second.provider}. Uninstall one, or rename yours, or disable a plugin with "
                f"{ENV_DISABLE_PLUGINS}={second.plugin.name}"
            )
        table[entry.name] = entry

    def names(self, kind: str) -> list[str]:
        return sorted(self._entries[kind])

    def entries(self, kind: str | None = None) -> list[Entry]:
        kinds = [kind] if kind else list(KINDS)
        return [self._entries[k][n] for k in kinds for n in sorted(self._entries[k])]

    def get(self, kind: str, name: str) -> Entry:
        if kind not in self._entries:
            raise ValueError(f"unknown part kind {kind!r}; kinds: {', '.join(KINDS)}")
        table = self._entries[kind]
        if name in table:
            return table[name]
        known = ", ".join(sorted(table)) or "none"
        msg = f"Unknown {kind} '{name}'. Registered {plural(kind)}: {known}.{did_you_mean(name, table)}"
        if self.failed:
            broken = "; ".join(f"'{p}' ({err})" for p, err in self.failed.items())
            msg += f" Some plugins failed to load and may have provided it: {broken}"
        raise UnknownNameError(msg)

    def build(self, kind: str, name: str, args: dict[str, Any] | None = None, **context: Any) -> Any:
        """Call the factory registered as ``kind``/``name``.

        ``args`` come from the recipe and are checked against the factory's signature, so a
        misspelled argument is a clear error. ``context`` holds what ganforge supplies (shapes,
        sub-models); each item is passed only if the factory accepts it.
        """
        entry = self.get(kind, name)
        args = dict(args or {})
        params = inspect.signature(entry.factory).parameters
        var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        accepted = [
            p for p, v in params.items()
            if v.kind in (v.KEYWORD_ONLY, v.POSITIONAL_OR_KEYWORD) and p not in context
        ]
        for key in args:
            if key in context:
                raise ConfigError(
                    f"{kind} '{name}': argument '{key}' is set by ganforge or the system that uses it, not by "
                    f"the recipe; remove it from the recipe's args ('ganforge plugins --args {name}' shows what "
                    f"a recipe sets)"
                )
            if key not in params and not var_kw:
                raise ConfigError(
                    f"{kind} '{name}' has no argument '{key}'. It accepts: "
                    f"{', '.join(accepted) or 'no arguments'}.{did_you_mean(key, accepted)}"
                )
        kwargs = {k: v for k, v in context.items() if k in params or var_kw}
        kwargs.update(args)
        missing = [
            p for p, v in params.items()
            if v.default is inspect.Parameter.empty
            and v.kind in (v.KEYWORD_ONLY, v.POSITIONAL_OR_KEYWORD) and p not in kwargs
        ]
        if missing:
            raise ConfigError(
                f"{kind} '{name}' needs argument(s) {', '.join(missing)}; set them under its "
                f"'args' in the recipe"
            )
        try:
            return entry.factory(**kwargs)
        except ValueError as err:  # factories signal unsupported settings with ValueError
            raise ConfigError(f"{kind} '{name}': {err}") from err


def plural(kind: str) -> str:
    return PLURALS.get(kind, kind + "s")
