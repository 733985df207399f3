"""The plugin manager: a thin typed wrapper around pluggy, and the registry it fills.

Loading, in order:

1. every entry point of the ``ganforge`` group (the built-ins declare theirs in ganforge's own
   pyproject.toml, exactly as a third-party package would), one by one, so that a plugin that
   fails to import is reported with its name and error while the others still load;
   ``GANFORGE_DISABLE_PLUGIN_AUTOLOAD=1`` skips this step and registers the built-ins by hand
   instead, for runs that must not depend on what else is installed;
2. ``GANFORGE_DISABLE_PLUGINS=name,other`` blocks plugins by name (built-ins included);
3. ``check_pending()``: a hook implementation whose name matches no hook (a typo) makes its
   plugin fail loudly instead of being silently ignored.

The engine never calls ``pm.hook`` itself: it uses :class:`Registry` to build parts by name
and the typed methods of :class:`PluginManager` for lifecycle callbacks.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import os
import sys
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pluggy

from ganforge import hookspecs
from ganforge.errors import ConfigError, PluginError, UnknownNameError, did_you_mean

#: Version of the contract in :mod:`ganforge.hookspecs`. A plugin module may declare the
#: version it was written for as ``GANFORGE_PLUGIN_API = 2``; a mismatch fails that plugin
#: (with a message) instead of letting it break in the middle of a run.
#: 2: objectives return a :class:`ganforge.system.GANSystem` (networks, optimizers, phases);
#: losses' ``g_loss`` may take the real logits. 1: ganforge 0.1 (one G, one D).
PLUGIN_API_VERSION = 2

ENTRY_POINT_GROUP = "ganforge"
ENV_DISABLE_AUTOLOAD = "GANFORGE_DISABLE_PLUGIN_AUTOLOAD"
ENV_DISABLE_PLUGINS = "GANFORGE_DISABLE_PLUGINS"
_UPGRADE = "docs/writing-plugins.md, 'Upgrading from plugin API 1'"


def builtin_plugins() -> dict[str, str]:
    """The built-in plugins (entry-point name -> module): ganforge's own entry points in the
    ``ganforge`` group, declared once, in its pyproject.toml. Registered by hand only when
    autoload is off; normally they arrive through their entry points like any other plugin."""
    try:
        dist = importlib.metadata.distribution("ganforge")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - not installed
        raise PluginError("ganforge is not installed (pip install -e .), so its built-in plugins "
                          "cannot be found") from None
    return {ep.name: ep.value for ep in dist.entry_points if ep.group == ENTRY_POINT_GROUP}


#: Plural of each kind, for messages and listings.
PLURALS = {"loss": "losses", "penalty": "penalties"}

#: Part kinds and the hook that registers each.
KINDS: dict[str, str] = {
    "generator": "ganforge_register_generators",
    "discriminator": "ganforge_register_discriminators",
    "loss": "ganforge_register_losses",
    "penalty": "ganforge_register_penalties",
    "objective": "ganforge_register_objectives",
    "dataset": "ganforge_register_datasets",
    "metric": "ganforge_register_metrics",
}


class PluginWarning(UserWarning):
    """A plugin could not be loaded; the others were."""


@dataclass(frozen=True)
class PluginInfo:
    """Where a loaded plugin came from."""

    name: str
    module: str
    distribution: str | None = None
    version: str | None = None


@dataclass(frozen=True)
class Entry:
    """One registered part."""

    kind: str
    name: str
    factory: Callable[..., Any]
    description: str
    plugin: PluginInfo

    @property
    def provider(self) -> str:
        """'plugin (distribution version)' for messages and catalogues."""
        p = self.plugin
        if p.distribution:
            return f"plugin '{p.name}' ({p.distribution} {p.version})"
        return f"plugin '{p.name}' ({p.module})"


class _CallerInfo:
    """Which plugin is registering: the one whose hook implementation is on the call stack."""

    def __init__(self, owners: dict[Any, list[tuple[Any, PluginInfo]]]):
        self.owners = owners

    def find(self) -> PluginInfo:
        frame = sys._getframe(2)
        while frame is not None:
            candidates = self.owners.get(frame.f_code)
            if candidates:
                if len(candidates) == 1:
                    return candidates[0][1]
                me = frame.f_locals.get("self")  # one class registered as several plugins
                for plugin, info in candidates:
                    if plugin is me:
                        return info
                return candidates[0][1]
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
            raise PluginError(
                f"{entry.kind} '{entry.name}' is registered twice: by {other.provider} and by "
                f"{entry.provider}. Uninstall one, or disable one with "
                f"{ENV_DISABLE_PLUGINS}={entry.plugin.name}"
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
                    f"{kind} '{name}': argument '{key}' is set by ganforge, not by the recipe; "
                    f"remove it from the recipe's args"
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


class PluginManager:
    """Loads plugins and exposes the hooks the engine calls, one typed method each."""

    def __init__(self, *, autoload: bool | None = None, builtins: bool = True):
        if autoload is None:
            autoload = os.environ.get(ENV_DISABLE_AUTOLOAD, "").strip().lower() not in (
                "1", "true", "yes", "on",
            )
        self.autoload = autoload
        self.builtins = builtins
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.info: dict[str, PluginInfo] = {}
        self.failed: dict[str, str] = {}
        self._registry: Registry | None = None
        self.blocked = {
            n.strip() for n in os.environ.get(ENV_DISABLE_PLUGINS, "").split(",") if n.strip()
        }
        for name in self.blocked:
            self.pm.set_blocked(name)
        self._load()

    # ----------------------------------------------------------------------------- loading
    def _load(self) -> None:
        if self.autoload:
            for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
                if ep.name in self.blocked or self.pm.has_plugin(ep.name):
                    continue
                dist = getattr(ep, "dist", None)
                info = PluginInfo(
                    ep.name, ep.value,
                    dist.metadata["Name"] if dist is not None else None,
                    dist.version if dist is not None else None,
                )
                self._try_register(info, ep.load)
        elif self.builtins:
            version = _own_version()
            for name, module in builtin_plugins().items():
                if name not in self.blocked:
                    info = PluginInfo(name, module, "ganforge", version)
                    self._try_register(info, lambda m=module: importlib.import_module(m))
        self._check_pending()

    def _try_register(self, info: PluginInfo, load: Callable[[], Any]) -> None:
        try:
            plugin = load()
            _check_api_version(info.name, plugin)
            self.pm.register(plugin, name=info.name)
        except Exception as err:  # noqa: BLE001 - isolate any failure of third-party code
            self._fail(info.name, f"{type(err).__name__}: {err}")
            return
        self.info[info.name] = info

    def _fail(self, name: str, error: str) -> None:
        self.failed[name] = error
        warnings.warn(f"ganforge plugin '{name}' failed to load: {error}", PluginWarning, stacklevel=3)

    def _check_pending(self) -> None:
        """pluggy's check_pending, applied plugin by plugin: a typo'd hook fails its plugin."""
        while True:
            try:
                self.pm.check_pending()
                return
            except pluggy.PluginValidationError as err:
                name = self.pm.get_name(err.plugin) or repr(err.plugin)
                self.pm.unregister(err.plugin)
                self.info.pop(name, None)
                self._fail(name, f"{err}. Hook names: {', '.join(_hook_names())}")

    def register(self, plugin: Any, name: str | None = None) -> str:
        """Register a plugin object by hand (tests, notebooks). Returns its name."""
        name = name or getattr(plugin, "__name__", None) or f"plugin-{id(plugin)}"
        _check_api_version(name, plugin)
        self.pm.register(plugin, name=name)
        self.info[name] = PluginInfo(name, getattr(plugin, "__module__", None) or name)
        self._registry = None
        self._check_pending()
        return name

    def unregister(self, name: str) -> None:
        self.pm.unregister(name=name)
        self.info.pop(name, None)
        self._registry = None

    def plugin_names(self) -> list[str]:
        return sorted(self.info)

    # ---------------------------------------------------------------------------- registry
    @property
    def registry(self) -> Registry:
        """The parts registered by all loaded plugins (built on first use).

        Each component hook is called through pluggy (``pm.hook.<name>(register=...)``), so
        hookwrappers and tracing see it; a registration is attributed to the plugin whose
        hook implementation is on the call stack when ``register`` is called."""
        if self._registry is None:
            registry = Registry(self.failed)
            for kind, hook_name in KINDS.items():
                caller = getattr(self.pm.hook, hook_name)
                owners: dict[Any, list[tuple[Any, PluginInfo]]] = {}
                for impl in caller.get_hookimpls():
                    name = self.pm.get_name(impl.plugin)
                    info = self.info.get(name) or PluginInfo(name, repr(impl.plugin))
                    code = getattr(impl.function, "__code__", None)
                    owners.setdefault(code, []).append((impl.plugin, info))
                caller(register=Register(registry, kind, _CallerInfo(owners)))
            self._registry = registry
        return self._registry

    # --------------------------------------------------------------------- lifecycle hooks
    def train_start(self, state: Any) -> None:
        self.pm.hook.ganforge_train_start(state=state)

    def step_end(self, state: Any, logs: dict[str, Any]) -> None:
        self.pm.hook.ganforge_step_end(state=state, logs=logs)

    def checkpoint_saved(self, state: Any, path: str) -> None:
        self.pm.hook.ganforge_checkpoint_saved(state=state, path=path)

    def train_end(self, state: Any) -> None:
        self.pm.hook.ganforge_train_end(state=state)


def plural(kind: str) -> str:
    return PLURALS.get(kind, kind + "s")


def _hook_names() -> list[str]:
    return sorted(n for n in dir(hookspecs) if n.startswith("ganforge_"))


def _check_api_version(name: str, plugin: Any) -> None:
    wanted = getattr(plugin, "GANFORGE_PLUGIN_API", None)
    if wanted is not None and wanted != PLUGIN_API_VERSION:
        raise PluginError(
            f"plugin '{name}' was written for ganforge plugin API {wanted}, but this ganforge "
            f"provides API {PLUGIN_API_VERSION}; install a version of the plugin made for API "
            f"{PLUGIN_API_VERSION}, or a ganforge that provides API {wanted}"
            + (f" (what changed and how to upgrade: {_UPGRADE})" if wanted == 1 else "")
        )


def _own_version() -> str | None:
    try:
        return importlib.metadata.version("ganforge")
    except importlib.metadata.PackageNotFoundError:
        return None


_default: PluginManager | None = None


def get_plugin_manager() -> PluginManager:
    """The process-wide plugin manager, loaded on first use."""
    global _default
    if _default is None:
        _default = PluginManager()
    return _default


def iter_hook_names() -> Iterable[str]:
    """Names of every hook in the spec module (for documentation and tests)."""
    return _hook_names()
