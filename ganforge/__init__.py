"""ganforge: train generative adversarial networks at any scale.

From Python (:mod:`ganforge.api`)::

    import ganforge

    state = ganforge.train("toy_grid", ["train.steps=500"])
    run = ganforge.load_run(state.output_dir)
    samples = run.generate(16, seed=0)

Quick start for plugin authors::

    import ganforge

    @ganforge.hookimpl
    def ganforge_register_losses(register):
        register("my_loss", MyLoss)

The hooks are documented in :mod:`ganforge.contract.hookspecs`.
"""
from ganforge.errors import GanforgeError
from ganforge.contract.hookspecs import hookimpl, hookspec
from ganforge.contract.manager import PLUGIN_API_VERSION

__version__ = "0.2.0"
__all__ = ["GanforgeError", "PLUGIN_API_VERSION", "PluginManager", "Recipe", "Run", "__version__", "hookimpl",
           "hookspec", "load_pretrained", "load_recipe", "load_run", "train"]

_LAZY = {"load_pretrained": "ganforge.run.export", "train": "ganforge.api", "load_run": "ganforge.api",
         "Run": "ganforge.api", "load_recipe": "ganforge.api", "Recipe": "ganforge.api",
         "PluginManager": "ganforge.contract.manager"}


def __getattr__(name: str):  # the API's heavier modules load on first use (plugin modules import ganforge)
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ganforge' has no attribute '{name}'")
