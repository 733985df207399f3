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

Component hooks are called through pluggy (so hookwrappers and tracing see them) when the
registry is first built; the engine then builds parts by name through :class:`Registry`
(:mod:`ganforge.contract.registry`) and calls lifecycle hooks through the typed methods of
:class:`PluginManager`.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import os
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pluggy

from ganforge.contract import hookspecs
from ganforge.contract.registry import (  # noqa: F401 - re-exported: the registry's names are part of this API
    ENV_DISABLE_PLUGINS, KINDS, PLURALS, Entry, PluginInfo, Register, Registry, _CallerInfo, owner_of, plural)
from ganforge.errors import PluginError

#: Version of the contract in :mod:`ganforge.contract.hookspecs`. A plugin module may declare the
#: version it was written for as ``GANFORGE_PLUGIN_API = 2``; a mismatch fails that plugin
#: (with a message) instead of letting it break in the middle of a run.
#: 2: objectives return a :class:`ganforge.contract.system.GANSystem` (networks, optimizers, phases);
#: losses' ``g_loss`` may take the real logits. 1: ganforge 0.1 (one G, one D).
PLUGIN_API_VERSION = 2

ENTRY_POINT_GROUP = "ganforge"
ENV_DISABLE_AUTOLOAD = "GANFORGE_DISABLE_PLUGIN_AUTOLOAD"
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


class PluginWarning(UserWarning):
    """A plugin could not be loaded; the others were."""


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
        except (Exception, SystemExit) as err:  # noqa: BLE001 - isolate any failure of third-party code
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
        if self.pm.has_plugin(name):
            where = self.info.get(name)
            source = f" (from {where.distribution})" if where is not None and where.distribution else ""
            raise PluginError(f"a plugin named '{name}' is already registered{source}; an installed plugin is "
                              f"loaded through its entry point, so register it by hand only when "
                              f"'{name}' not in pm.plugin_names(), or under another name")
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
        while self._registry is None:
            registry, owners = Registry(self.failed), {}
            try:
                for kind, hook_name in KINDS.items():
                    caller = getattr(self.pm.hook, hook_name)
                    owners = {}
                    for impl in caller.get_hookimpls():
                        name = self.pm.get_name(impl.plugin)
                        info = self.info.get(name) or PluginInfo(name, repr(impl.plugin))
                        code = getattr(impl.function, "__code__", None)
                        owners.setdefault(code, []).append((impl.plugin, info))
                    caller(register=Register(registry, kind, _CallerInfo(owners)))
            except PluginError:
                raise  # a broken contract between plugins (a name registered twice): the user decides
            except Exception as err:  # noqa: BLE001 - a plugin's registration hook raised
                culprit = _culprit(err, owners)
                if culprit is None:
                    raise
                plugin, info = culprit
                self.pm.unregister(plugin)
                self.info.pop(info.name, None)
                self._fail(info.name, f"{type(err).__name__} in {hook_name}: {err}")
                continue  # build again without it
            self._registry = registry
        return self._registry

    def recipes(self) -> dict[str, tuple[Path, PluginInfo]]:
        """The recipes plugin packages ship (``ganforge_register_recipes``), by name, with
        the plugin that registered each. A name registered twice is a :class:`PluginError`."""
        found: dict[str, tuple[Path, PluginInfo]] = {}
        for impl in self.pm.hook.ganforge_register_recipes.get_hookimpls():
            name = self.pm.get_name(impl.plugin)
            info = self.info.get(name) or PluginInfo(name, repr(impl.plugin))

            def register(recipe: str, path: Any, info: PluginInfo = info) -> None:
                if recipe in found:
                    raise PluginError(f"recipe '{recipe}' is registered by plugin '{found[recipe][1].name}' and by "
                                      f"plugin '{info.name}'; uninstall or disable one ({ENV_DISABLE_PLUGINS})")
                found[recipe] = (Path(path), info)

            impl.function(register=register)
        return found

    # --------------------------------------------------------------------- lifecycle hooks
    def train_start(self, state: Any) -> None:
        self.pm.hook.ganforge_train_start(state=state)

    def step_end(self, state: Any, logs: dict[str, Any]) -> None:
        self.pm.hook.ganforge_step_end(state=state, logs=logs)

    def checkpoint_saved(self, state: Any, path: str) -> None:
        self.pm.hook.ganforge_checkpoint_saved(state=state, path=path)

    def train_end(self, state: Any) -> None:
        self.pm.hook.ganforge_train_end(state=state)


def _culprit(err: BaseException, owners: dict[Any, list[tuple[Any, PluginInfo]]]) -> tuple[Any, PluginInfo] | None:
    """The plugin whose hook implementation raised ``err`` (the innermost one on its traceback)."""
    found, tb = None, err.__traceback__
    while tb is not None:
        found = owner_of(tb.tb_frame, owners) or found
        tb = tb.tb_next
    return found


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
