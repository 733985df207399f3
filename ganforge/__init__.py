"""ganforge: train generative adversarial networks at any scale.

Quick start for plugin authors::

    import ganforge

    @ganforge.hookimpl
    def ganforge_register_losses(register):
        register("my_loss", MyLoss)

The hooks are documented in :mod:`ganforge.hookspecs`.
"""
from ganforge.errors import GanforgeError
from ganforge.hookspecs import hookimpl, hookspec
from ganforge.manager import PLUGIN_API_VERSION

__version__ = "0.2.0"
__all__ = ["GanforgeError", "PLUGIN_API_VERSION", "__version__", "hookimpl", "hookspec"]
